"""`manage.py rungateway` as its own process: starts, answers SSH, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_rungateway_serves_ssh_and_stops_cleanly_on_sigterm(tmp_path):
    env = {**os.environ, "AIRLOCK_VAR_DIR": str(tmp_path), "DATABASE_URL": ""}
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    port = free_port()
    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rungateway", "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "host key SHA256:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "rungateway did not start"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-Airlock")
        key = tmp_path / "ssh_host_ed25519_key"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(errors="replace")
