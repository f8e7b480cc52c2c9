"""Hostile input at both ends of the gateway. Each case closes only its own
connection, leaves no traceback in the logs, and a real session afterwards
works; memory stays bounded."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import asyncssh
import pytest

from broker.models import AuditEvent, Device
from sessions.models import Session
from tests.conftest import free_port, stop_thread_loop
from tests.support.sshd import (  # noqa: F401  (fixtures)
    GatewayThread,
    device_sshd,
    ended_sessions,
    make_ssh_vendor,
    wait_for,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]
GRACE = 5


@pytest.fixture
def gateway(transactional_db, settings) -> Iterator[GatewayThread]:
    """A gateway with a short login grace and a small per-address cap."""
    settings.GATEWAY_LOGIN_GRACE = GRACE
    settings.GATEWAY_MAX_UNAUTH_PER_ADDRESS = 10
    # Within the grace: the vendor hears why the device failed.
    settings.GATEWAY_DEVICE_CONNECT_TIMEOUT = 1
    settings.GATEWAY_DEVICE_LOGIN_TIMEOUT = 1
    thread = GatewayThread().start()
    yield thread
    thread.stop()


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info and r.name.startswith(("airlock", "asyncssh"))]
    assert bad == [], [r.getMessage() for r in bad]
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("airlock")
    ]


def _raw(port: int, payload: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        if payload:
            sock.sendall(payload)
        got = b""
        if read:
            try:
                while chunk := sock.recv(65536):
                    got += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        return got


def _works(v) -> None:
    result = v.ssh("echo still-works")
    assert result.stdout == b"still-works\n", result.stderr


def test_random_bytes_close_only_that_connection(make_ssh_vendor, gateway, no_tracebacks):
    v = make_ssh_vendor()
    got = _raw(gateway.port, os.urandom(4096))
    assert got.startswith(b"SSH-2.0-")  # our banner, then the connection ends
    _works(v)


def test_truncated_and_oversized_packets_close_only_that_connection(
    make_ssh_vendor, gateway, no_tracebacks
):
    v = make_ssh_vendor()
    hello = b"SSH-2.0-OpenSSH_9.2\r\n"
    _raw(gateway.port, hello + struct.pack(">I", 1000) + b"\x00" * 10)  # truncated
    _raw(gateway.port, hello + struct.pack(">I", 0xFFFFFFF0) + os.urandom(64))  # near 4 GiB
    _raw(
        gateway.port, hello + struct.pack(">I", 300_000) + b"\x04" + os.urandom(100)
    )  # over the max
    _works(v)


def test_a_client_stalling_in_the_handshake_is_closed_after_the_login_grace(
    make_ssh_vendor, gateway, no_tracebacks
):
    v = make_ssh_vendor()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        # The guard is far past the grace only so a broken gateway cannot hang
        # the run; what is asserted is that the gateway hung up (EOF), not us.
        sock.settimeout(GRACE * 12)
        got, closed_by_gateway = b"", False
        while chunk := sock.recv(65536):
            got += chunk
        closed_by_gateway = True
    assert got.startswith(b"SSH-2.0-")
    assert closed_by_gateway
    _works(v)


def test_two_hundred_half_open_connections_from_one_address_are_capped(
    make_ssh_vendor, gateway, no_tracebacks
):
    v = make_ssh_vendor()
    socks = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10) for _ in range(200)]
    try:

        def closed(sock: socket.socket) -> bool:
            sock.settimeout(0.2)
            try:
                while True:
                    data = sock.recv(4096)
                    if not data:
                        return True
            except TimeoutError:
                return False
            except OSError:
                return True

        open_now = [s for s in socks if not closed(s)]
        assert len(open_now) <= 10
    finally:
        for s in socks:
            s.close()
    # The cap counts only connections that have not authenticated: once the
    # half-open ones are gone, a real vendor gets in.
    wait_for(lambda: not gateway.gateway.limiter.counts)
    _works(v)


class _ChannelBeforeAuth(asyncssh.SSHClient):
    def __init__(self, key: asyncssh.SSHKey) -> None:
        self.key = key

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def public_key_auth_requested(self):
        # Kex is done, auth not: ask for a session channel now. asyncssh's
        # client would politely defer the packet until after auth; a hostile
        # client does not, so lift the deferral for this one packet.
        conn = self.conn
        conn._auth_complete = True
        try:
            conn.send_packet(
                90,
                asyncssh.packet.String(b"session"),
                asyncssh.packet.UInt32(0),
                asyncssh.packet.UInt32(1 << 20),
                asyncssh.packet.UInt32(32768),
            )
        finally:
            conn._auth_complete = False
        return self.key


def test_channel_open_before_authentication_gets_no_channel(
    make_ssh_vendor, gateway, no_tracebacks
):
    v = make_ssh_vendor()
    key = asyncssh.read_private_key(str(v.key))

    async def attempt() -> str:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gateway.port,
                username=v.login,
                known_hosts=None,
                client_factory=lambda: _ChannelBeforeAuth(key),
                client_keys=None,
                config=None,
                agent_path=None,
                login_timeout=10,
            ):
                return "authenticated"
        except (asyncssh.Error, OSError) as exc:
            return f"refused: {exc}"

    outcome = asyncio.run(attempt())
    assert outcome.startswith("refused")
    assert not Session.objects.filter(user=v.user).exists()
    _works(v)


def test_a_public_key_offer_without_a_signature_learns_nothing(
    make_ssh_vendor, device_sshd, tmp_path, no_tracebacks
):
    from broker.models import Grant

    v = make_ssh_vendor()
    Grant.objects.filter(pk=v.grant.pk).delete()  # a denial would name the device's grant state
    pub_only = tmp_path / "only.pub"
    pub_only.write_text((v.key.parent / (v.key.name + ".pub")).read_text())
    v.key = pub_only  # OpenSSH can offer it but never sign
    logins = len(device_sshd.logins())
    result = v.ssh("echo hi")
    assert result.returncode == 255
    assert b"no approved access" not in result.stderr
    assert not AuditEvent.objects.filter(action="gateway.denied").exists()
    assert len(device_sshd.logins()) == logins


# --- hostile devices ----------------------------------------------------------------


class HostileDevice:
    """A TCP server on a free port misbehaving in one way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "instant-close":
                writer.close()
                return
            if self.mode == "silence":
                await asyncio.sleep(30)
            elif self.mode == "endless-banner":
                while True:
                    writer.write(b"Welcome to the plant network, have a nice day\r\n" * 100)
                    await writer.drain()
            elif self.mode == "huge-banner":
                writer.write(b"A" * (8 * 1024 * 1024))
                await writer.drain()
                await asyncio.sleep(30)
            elif self.mode == "garbage":
                while True:
                    writer.write(os.urandom(65536))
                    await writer.drain()
            elif self.mode == "huge-packet":
                writer.write(
                    b"SSH-2.0-Hostile\r\n" + struct.pack(">I", 0xFFFFFFF0) + os.urandom(1 << 16)
                )
                await writer.drain()
                await asyncio.sleep(30)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> HostileDevice:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop
        ).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            stop_thread_loop(self.loop, self.thread)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "mode", ["instant-close", "silence", "endless-banner", "huge-banner", "garbage", "huge-packet"]
)
def test_a_hostile_device_ends_only_its_own_session(
    mode, make_ssh_vendor, device_sshd, no_tracebacks
):
    v = make_ssh_vendor()
    before = _rss_mib()
    with HostileDevice(mode) as hostile:
        Device.objects.filter(pk=v.device.pk).update(ssh_port=hostile.port)
        result = v.ssh("echo hi", timeout=60)
    assert result.returncode == 255
    assert b"access denied" in result.stderr
    assert not Session.objects.filter(user=v.user).exists()
    assert _rss_mib() - before < 64  # peak RSS: nothing buffered the flood
    Device.objects.filter(pk=v.device.pk).update(ssh_port=device_sshd.port)
    _works(v)


class _FloodingDevice(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return True


async def _flood(process: asyncssh.SSHServerProcess) -> None:
    chunk = b"\x1b[31m\x1b]0;owned\x07\x1b[2J\x1b[?1049h" * 2000
    try:
        while True:
            process.stdout.write(chunk)
            await process.stdout.drain()
    except (asyncssh.Error, OSError, BrokenPipeError):
        pass


def test_a_device_flooding_terminal_escapes_is_relayed_with_bounded_memory(
    make_ssh_vendor, device_sshd, gateway, tmp_path
):
    v = make_ssh_vendor()
    key = asyncssh.generate_private_key("ssh-ed25519")
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            _FloodingDevice,
            "127.0.0.1",
            port,
            server_host_keys=[key],
            process_factory=_flood,
            encoding=None,
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        Device.objects.filter(pk=v.device.pk).update(
            ssh_port=port, ssh_host_key=key.export_public_key().decode()
        )
        before = _rss_mib()
        # A slow vendor: reads a little, then stops reading for a while.
        proc = subprocess.Popen(v.ssh_args("flood"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.read(1 << 20)
        time.sleep(3)  # the device keeps writing; the gateway must not buffer it all
        assert _rss_mib() - before < 64
        live = wait_for(lambda: gateway.live_sessions())[0]
        gateway.call(live.terminate("an approver ended this session"))
        proc.kill()
        proc.communicate(timeout=10)
        session = wait_for(lambda: ended_sessions(v.user))[0]
        assert session.end_reason == "an approver ended this session"
    finally:
        loop.call_soon_threadsafe(server.close)  # in its own loop, before the stop below
        stop_thread_loop(loop, thread)
    Device.objects.filter(pk=v.device.pk).update(
        ssh_port=device_sshd.port, ssh_host_key=device_sshd.host_key_line
    )
    _works(v)
