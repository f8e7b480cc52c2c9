"""Port forwarding through the gateway: `-L` only to the device's own
address on the grant's ports; everything else refused."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading

import pytest

from tests.conftest import free_port
from tests.support.sshd import device_sshd, gateway, make_ssh_vendor, wait_for  # noqa: F401

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(b"device says: " + data)


@pytest.fixture
def device_service():
    """A TCP service on the device's address (think Modbus/TCP on 502)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _forward(v, spec: str) -> tuple[subprocess.Popen, int]:
    local = free_port()
    proc = subprocess.Popen(
        v.ssh_args(extra=["-N", "-L", f"127.0.0.1:{local}:{spec}"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: _connectable(local) or proc.poll() is not None)
    return proc, local


def _talk(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"ping")
        sock.settimeout(10)
        try:
            return sock.recv(100)
        except (TimeoutError, ConnectionResetError):
            return b""


def _stop(proc: subprocess.Popen) -> bytes:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return err


def test_forwarding_to_an_allowed_port_on_the_device_works(make_ssh_vendor, device_service):
    v = make_ssh_vendor(grant={"forward_ports": [device_service]})
    proc, local = _forward(v, f"127.0.0.1:{device_service}")
    try:
        assert _talk(local) == b"device says: ping"
    finally:
        _stop(proc)


def test_forwarding_by_device_name_goes_to_the_devices_address(make_ssh_vendor, device_service):
    v = make_ssh_vendor(grant={"forward_ports": [device_service]})
    proc, local = _forward(v, f"{v.device.slug}:{device_service}")
    try:
        assert _talk(local) == b"device says: ping"
    finally:
        _stop(proc)


def test_forwarding_to_a_port_not_on_the_grant_is_refused(make_ssh_vendor, device_service):
    v = make_ssh_vendor(
        grant={"forward_ports": [device_service + 1 if device_service < 65535 else 1]}
    )
    proc, local = _forward(v, f"127.0.0.1:{device_service}")
    try:
        assert _talk(local) == b""
    finally:
        err = _stop(proc)
    assert b"does not allow forwarding to port" in err


def test_forwarding_to_another_host_is_refused(make_ssh_vendor, device_service):
    v = make_ssh_vendor(grant={"forward_ports": [device_service]})
    proc, local = _forward(v, f"localhost:{device_service}")
    try:
        assert _talk(local) == b""
    finally:
        err = _stop(proc)
    assert b"forwards only to" in err


def test_remote_forwarding_is_refused(make_ssh_vendor):
    v = make_ssh_vendor()
    result = v.ssh(
        "true",
        extra=["-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:22"],
    )
    assert result.returncode == 255
    assert (
        b"forwarding failed" in result.stderr.lower()
        or b"remote port forwarding failed" in result.stderr
    )


def test_agent_and_x11_forwarding_requests_are_refused(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor()
    env = {"SSH_AUTH_SOCK": str(tmp_path / "nosock"), "DISPLAY": ":0", "PATH": "/usr/bin:/bin"}
    args = v.ssh_args("echo agent=$SSH_AUTH_SOCK display=$DISPLAY", extra=["-A", "-X"])
    result = subprocess.run(args, capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"agent= display="
