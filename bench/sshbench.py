"""Shared set-up of the SSH benchmarks (ssh_throughput.py, ssh_latency.py,
ssh_concurrency.py). Not a benchmark itself.

It builds, on this machine and in one run:
- the device: Debian's sshd on a free port (tests/support/sshd.py; needs root for
  its local account), with the benchmark's key authorised for the direct and
  ProxyJump baselines;
- a jump host: a second sshd, for the OpenSSH ProxyJump baseline;
- Airlock: a throwaway var/ directory, a migrated SQLite database, a vendor
  with a key and a grant on the device, and `manage.py rungateway` as its own
  process (recording on, detectors on: whatever the gateway runs).

The three paths are then plain OpenSSH command lines (`paths()`), all with
the same cipher (aes128-gcm@openssh.com) on every leg.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CIPHER = "aes128-gcm@openssh.com"


@dataclass
class World:
    tmp: Path
    device: Any
    jump: Any
    gateway_port: int
    gateway_proc: subprocess.Popen
    key: Path
    login: str
    known_hosts: Path
    user_code: str = ""
    procs: list = field(default_factory=list)

    def base(self) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            f"Ciphers={CIPHER}",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "Compression=no",
        ]

    def paths(self) -> dict[str, list[str]]:
        """name → ssh command prefix (append the remote command)."""
        from tests.support.sshd import DEVICE_USER

        dev = self.device
        jump_cmd = " ".join(
            [*self.base(), "-W", "%h:%p", "-p", str(self.jump.port), f"{DEVICE_USER}@127.0.0.1"]
        )
        return {
            "direct": [*self.base(), "-p", str(dev.port), f"{DEVICE_USER}@127.0.0.1"],
            "proxyjump": [
                *self.base(),
                "-o",
                f"ProxyCommand={jump_cmd}",
                "-p",
                str(dev.port),
                f"{DEVICE_USER}@127.0.0.1",
            ],
            "airlock": [*self.base(), "-p", str(self.gateway_port), f"{self.login}@127.0.0.1"],
        }

    def gateway_pid(self) -> int:
        return self.gateway_proc.pid

    def stop(self) -> None:
        self.gateway_proc.terminate()
        try:
            self.gateway_proc.wait(30)
        except subprocess.TimeoutExpired:
            self.gateway_proc.kill()
        self.device.stop()
        self.jump.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def free_port() -> int:
    from tests.conftest import free_port as fp

    return fp()


def start_uvicorn(tmp: Path) -> tuple[subprocess.Popen, int]:
    """The portal (HTTP and websockets) under uvicorn on a free port, as
    production runs it; returns once /healthz answers."""
    import urllib.request

    port = free_port()
    log = tmp / "uvicorn.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "broker.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc, port
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"uvicorn did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)


def build(*, env: dict[str, str] | None = None) -> World:
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks start sshd with a local account: run them as root")
    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    tmp.chmod(0o755)  # sshd reads authorized_keys as the device account
    var = tmp / "var"
    var.mkdir()
    os.environ["AIRLOCK_VAR_DIR"] = str(var)
    os.environ["AIRLOCK_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("AIRLOCK_GATEWAY_MAX_UNAUTH_PER_ADDRESS", "2000")
    os.environ.setdefault("AIRLOCK_GATEWAY_MAX_UNAUTH_TOTAL", "5000")
    os.environ.setdefault("AIRLOCK_GATEWAY_LOGIN_GRACE", "120")
    # Detectors stay on; the volume one must not end a benchmark meant to move bulk data.
    os.environ.setdefault("AIRLOCK_EXFIL_BYTES_PER_MINUTE", str(1 << 50))
    os.environ.setdefault("AIRLOCK_GATEWAY_DEVICE_CONNECT_TIMEOUT", "60")
    os.environ.setdefault("AIRLOCK_GATEWAY_DEVICE_LOGIN_TIMEOUT", "60")
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(env or {})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from tests.support.sshd import DEVICE_PASSWORD, ensure_device_user, keygen, start_sshd

    ensure_device_user()
    extra = "MaxStartups 2000:30:4000\nMaxSessions 2000\n"
    device = start_sshd(tmp / "device", extra_config=extra)
    jump = start_sshd(tmp / "jump", extra_config=extra)
    key, pub = keygen(tmp / "bench_ed25519")
    device.authorized_keys.write_text(pub + "\n")
    jump.authorized_keys.write_text(pub + "\n")

    login, user_code = _airlock_world(device, pub, DEVICE_PASSWORD)
    port = free_port()
    log = tmp / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rungateway", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "host key" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"rungateway did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    from sessions.doors.ssh.gateway import host_key_line

    known = tmp / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{port} {host_key_line()}\n"
        f"[127.0.0.1]:{device.port} {device.host_key_line}\n"
        f"[127.0.0.1]:{jump.port} {jump.host_key_line}\n"
    )
    return World(
        tmp=tmp,
        device=device,
        jump=jump,
        gateway_port=port,
        gateway_proc=proc,
        key=key,
        login=login,
        known_hosts=known,
        user_code=user_code,
    )


def _airlock_world(device: Any, pub: str, password: str) -> tuple[str, str]:
    from datetime import timedelta

    from django.utils import timezone

    from broker import sshkeys, vault
    from broker.models import Credential, Device, Grant, Site, SSHPublicKey, User, Vendor, Zone
    from tests.support.sshd import DEVICE_USER

    try:
        from broker.models import TOTPDevice
    except ImportError:  # older trees: django-otp's own
        from django_otp.plugins.otp_totp.models import TOTPDevice

    site = Site.objects.create(name="Bench plant", slug="bench")
    zone = Zone.objects.create(site=site, name="Bench zone", slug="bench-zone")
    # Detectors run as in production, but a benchmark types at machine speed
    # and moves bulk data on purpose: their signals are recorded, not acted on.
    try:
        from sessions.models import ResponseRule
    except ImportError:
        ResponseRule = None
    if ResponseRule is not None:
        for severity in ("low", "medium", "high", "critical"):
            ResponseRule.objects.create(zone=zone, severity=severity, actions=["record"])
    plc = Device.objects.create(
        slug="bench-plc",
        name="Bench PLC",
        zone=zone,
        ssh_host="127.0.0.1",
        ssh_port=device.port,
        ssh_host_key=device.host_key_line,
    )
    kid, blob = vault.seal(password)
    Credential.objects.create(
        device=plc, protocol="ssh", username=DEVICE_USER, key_id=kid, ciphertext=blob
    )
    vendor = Vendor.objects.create(name="Bench vendor")
    user = User.objects.create_user(username="bench", password=os.urandom(8).hex(), vendor=vendor)
    TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
    now = timezone.now()
    Grant.objects.create(
        user=user,
        device=plc,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=8),
        protocols=["ssh"],
    )
    parsed = sshkeys.parse(pub)
    SSHPublicKey.objects.create(
        user=user,
        public_key=parsed.openssh,
        algorithm=parsed.algorithm,
        bits=parsed.bits,
        fingerprint=parsed.fingerprint,
    )
    return f"bench+{plc.slug}", str(user.code)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]
