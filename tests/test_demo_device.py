"""The demo's simulated PLC: its command set, its SFTP folder, never a shell,
and the whole newcomer path through the real gateway with the real ssh."""

from __future__ import annotations

import json
import os
import subprocess
from io import StringIO

import pexpect
import pytest
from django.core.management import call_command

from broker.models import Device
from sessions.demo import device as demodevice
from sessions.demo.device import PLC
from sessions.doors.ssh.gateway import host_key_line
from tests.conftest import free_port
from tests.support.sshd import GatewayThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_plc_answers_its_small_command_set():
    plc = PLC()
    assert "SIMULATED" in plc.run("status", "maint")
    assert plc.run("write 3 1500", "maint") == "R3 = 1500 (was 0)\n"
    assert plc.run("read 3", "maint") == "R3 = 1500\n"
    assert "maint: R3 0 -> 1500" in plc.run("logs", "maint")
    assert "read <register>" in plc.run("help", "maint")


def test_plc_refuses_bad_arguments_and_anything_shell_like():
    plc = PLC()
    assert plc.run("read 99", "m").startswith("usage")
    assert plc.run("write 1 70000", "m").startswith("usage")
    assert plc.run("write 1 -5", "m").startswith("usage")
    assert plc.run("sh -c id", "m") == "unknown command 'sh'; type help\n"
    assert plc.run("status; id", "m").startswith("unknown command")


@pytest.fixture
def demo(settings, tmp_path):
    """seed_demo, then the simulated PLC and the gateway in one loop thread."""
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    data = json.loads(out.getvalue())
    thread = GatewayThread()
    thread.thread.start()
    port = free_port()
    Device.objects.filter(slug="demo-plc").update(ssh_port=port)
    device_server = thread.call(demodevice.start_demo_device("127.0.0.1", port))
    from sessions.doors.ssh.gateway import start_server

    thread.gateway = thread.call(start_server("127.0.0.1", 0))
    thread.port = thread.gateway.port
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{thread.port} {host_key_line()}\n")
    key = (
        settings.VAR_DIR / "demo" / "vendor_ed25519"
        if not os.path.isabs(data["vendor_ssh_key"])
        else data["vendor_ssh_key"]
    )
    base = [
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]
    yield data, thread, base
    try:
        thread.close_server(device_server)
    finally:
        thread.stop()


def test_seed_demo_json_has_the_gateway_the_key_and_the_ssh_command(demo):
    data, _, _ = demo
    assert data["gateway"]["host_key_fingerprint"].startswith("SHA256:")
    assert {"slug": "demo-plc", "name": "Demo PLC (simulated)"} in data["devices"]
    assert data["vendor_ssh_key"].endswith("demo/vendor_ed25519")
    assert data["ssh_command"].endswith("vendor+demo-plc@127.0.0.1")
    assert f"-p {data['gateway']['port']}" in data["ssh_command"]
    key = data["vendor_ssh_key"]
    path = key if os.path.isabs(key) else os.path.join(os.getcwd(), key)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_newcomer_reaches_the_demo_plc_through_the_gateway(demo):
    _, thread, base = demo
    result = subprocess.run(
        ["ssh", *base, "-p", str(thread.port), "vendor+demo-plc@127.0.0.1", "status"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert b"demo-plc (SIMULATED)" in result.stdout


def test_demo_plc_interactive_session_is_labelled_and_has_no_shell(demo):
    _, thread, base = demo
    child = pexpect.spawn(
        "ssh", [*base, "-tt", "-p", str(thread.port), "vendor+demo-plc@127.0.0.1"], timeout=30
    )
    child.expect("Airlock DEMO PLC: a simulated device")
    child.expect("demo-plc> ")
    child.sendline("id")
    child.expect("unknown command 'id'")
    child.sendline("write 2 42")
    child.expect("R2 = 42")
    child.sendline("exit")
    child.expect(pexpect.EOF)


def test_demo_plc_sftp_stays_in_its_scratch_folder(demo, tmp_path):
    _, thread, base = demo
    (demodevice.files_dir() / "recipe.csv").write_text("speed,1200\n")
    batch = tmp_path / "batch"
    batch.write_text(
        f"get recipe.csv {tmp_path / 'recipe.csv'}\nget ../../airlock.sqlite3 {tmp_path / 'db'}\n"
    )
    result = subprocess.run(
        ["sftp", *base, "-P", str(thread.port), "-b", str(batch), "vendor+demo-plc@127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    assert (tmp_path / "recipe.csv").read_text() == "speed,1200\n"
    assert not (tmp_path / "db").exists()
    assert result.returncode != 0


def test_rundemodevice_runs_as_its_own_process(tmp_path):
    import signal
    import socket
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "AIRLOCK_VAR_DIR": str(tmp_path), "DATABASE_URL": ""}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True, timeout=120
    )
    subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--json"],
        cwd=root,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    port = free_port()
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rundemodevice", "--listen", f"127.0.0.1:{port}"],
        cwd=root,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "DEMO PLC (simulated) listening" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # A half-open client: it reads the banner, sends nothing and stays
        # connected while the device is stopped.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-")
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
        assert proc.returncode is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(errors="replace")


def test_stopping_the_demo_device_drops_a_half_open_client():
    """A client that read the banner and never answered must not keep the
    device alive: close() drops it rather than waiting for asyncssh's
    two-minute login timeout."""
    import socket

    call_command("seed_demo", "--json", stdout=StringIO())
    thread = GatewayThread()
    thread.thread.start()
    try:
        device = thread.call(demodevice.start_demo_device("127.0.0.1", 0))
        with socket.create_connection(("127.0.0.1", device.get_port()), timeout=20) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-")
            device.close()
            thread.call(device.wait_closed())
            # The device hung up: end of stream, not the 20 s socket timeout.
            while chunk := sock.recv(4096):
                assert chunk
    finally:
        thread.loop.call_soon_threadsafe(thread.loop.stop)
