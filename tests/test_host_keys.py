"""Keys generated once into var/: the gateway's host key, the demo PLC's host
key and the demo vendor's key all come from sessions.doors.ssh.gateway.private_key_file."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from sessions.doors.ssh.gateway import private_key_file

PROBE = (
    "import sys; from pathlib import Path\n"
    "from sessions.doors.ssh.gateway import private_key_file\n"
    "print(private_key_file(Path(sys.argv[1]), 'probe').get_fingerprint('sha256'))\n"
)


def test_key_file_is_private_and_reused(tmp_path: Path):
    path = tmp_path / "keys" / "host_key"
    first = private_key_file(path, "test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = private_key_file(path, "test")
    assert again.get_fingerprint("sha256") == first.get_fingerprint("sha256")
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path, settings):
    path = tmp_path / "host_key"
    env = {
        "DJANGO_SETTINGS_MODULE": "broker.settings",
        "AIRLOCK_VAR_DIR": str(tmp_path / "var"),
        "PATH": "/usr/bin:/bin",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import django; django.setup()\n" + PROBE, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=settings.BASE_DIR,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode()[-500:] for _, err in results]
    fingerprints = {out.decode().strip() for out, _ in results}
    assert len(fingerprints) == 1
    assert fingerprints == {private_key_file(path, "x").get_fingerprint("sha256")}
