"""Browser RDP through the real ASGI application: the RDP websocket consumer
relays a real RFB stream (its own Xvnc on a unix socket, xfreerdp logged in
to a real RDP server — FreeRDP's shadow server on an Xvfb display — with the
vaulted password on stdin). The "browser" here is a small RFB client speaking
through channels.testing.WebsocketCommunicator; tests/test_rdp_browser.py
drives noVNC in chromium."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from broker.asgi import application
from broker.models import AuditEvent
from sessions.anomalies.models import Signal
from sessions.doors.rdp import consumer as rdp_consumer
from sessions.doors.rdp.rfb import PROTOCOL_VERSION
from sessions.doors.web import terminal
from sessions.live.recording import recordings_dir
from sessions.models import Session
from tests.support.browser_session import session_cookie
from tests.support.rdpserver import DEVICE_PASSWORD, rdp_server, rdp_vendor  # noqa: F401  (fixtures)
from tests.support.sshd import wait_for
from tests.support.websockets import run, socket

pytestmark = [pytest.mark.rdp, pytest.mark.django_db(transaction=True)]

ORIGIN = b"http://127.0.0.1:8000"
HOST = b"127.0.0.1:8000"


def communicator(
    grant: Any, cookie: str | None, *, origin: bytes = ORIGIN, query: str = "width=800&height=600"
) -> WebsocketCommunicator:
    return socket(
        f"/ws/rdp/{grant.code}/?{query}", cookie, host=HOST, origin=origin, subprotocols=["binary"]
    )


class Browser:
    """The RFB side of noVNC, enough to drive a session."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.buffer = b""
        self.close: dict | None = None

    async def read(self, n: int, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < n:
            frame = await self.comm.receive_output(max(0.1, deadline - time.monotonic()))
            if frame["type"] == "websocket.close":
                self.close = frame
                raise ConnectionError(frame.get("reason", ""))
            self.buffer += frame.get("bytes") or b""
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def handshake(self) -> tuple[int, int]:
        assert await self.read(12) == PROTOCOL_VERSION
        await self.comm.send_to(bytes_data=PROTOCOL_VERSION)
        count = (await self.read(1))[0]
        assert 1 in await self.read(count)
        await self.comm.send_to(bytes_data=b"\x01")
        assert await self.read(4) == b"\x00\x00\x00\x00"
        await self.comm.send_to(bytes_data=b"\x01")
        width, height = struct.unpack(">HH", await self.read(4))
        await self.read(16)
        name_length = struct.unpack(">I", await self.read(4))[0]
        await self.read(name_length)
        return width, height

    async def click(self, x: int, y: int) -> None:
        for buttons in (0, 1, 0):
            await self.comm.send_to(bytes_data=struct.pack(">BBHH", 5, buttons, x, y))

    async def type(self, text: str) -> None:
        for ch in text:
            keysym = 0xFF0D if ch == "\n" else ord(ch)
            for down in (1, 0):
                await self.comm.send_to(bytes_data=struct.pack(">BBxxI", 4, down, keysym))
                await asyncio.sleep(0.02)

    async def ended(self, timeout: float = 30) -> dict:
        """Read until the server closes; returns the close frame."""
        deadline = time.monotonic() + timeout
        while self.close is None:
            frame = await self.comm.receive_output(max(0.1, deadline - time.monotonic()))
            if frame["type"] == "websocket.close":
                self.close = frame
        return self.close


def desktop_dirs() -> list[Path]:
    root = Path(settings.RDP_RUN_DIR)
    return [p for p in root.iterdir()] if root.exists() else []


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def argv_and_environ_of_all_processes() -> bytes:
    found = b""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for name in ("cmdline", "environ"):
            try:
                found += Path(f"/proc/{pid}/{name}").read_bytes() + b"\n"
            except OSError:
                pass
    return found


def tcp_listeners_of(pids: set[int]) -> list[str]:
    """Listening TCP sockets owned by any of `pids` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":
                inodes.add(parts[9])
    owned = []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    owned.append(f"{pid}:{target}")
        except OSError:
            pass
    return owned


def group_pids(pgid: int) -> set[int]:
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) == pgid:
                pids.add(int(pid))
        except OSError:
            pass
    return pids


def test_vendor_types_into_the_remote_desktop_over_a_private_unix_socket(rdp_vendor, rdp_server):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        browser = Browser(comm)
        seen["size"] = await browser.handshake()
        live = next(iter(rdp_consumer.RDP_SESSIONS.values()))
        desktop = live.desktop
        seen["pgid"] = desktop.pgid
        seen["pids"] = group_pids(desktop.pgid)
        seen["dir_mode"] = desktop.dir.stat().st_mode & 0o777
        seen["socket_mode"] = desktop.socket_path.stat().st_mode & 0o777
        seen["listeners"] = tcp_listeners_of(seen["pids"])
        seen["processes"] = argv_and_environ_of_all_processes()
        await browser.click(150, 100)  # focus follows the pointer: into the device's xterm
        await asyncio.sleep(0.5)
        await browser.type("hello-airlock-rdp\n")
        deadline = time.monotonic() + 20
        while "hello-airlock-rdp" not in rdp_server.typed() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a few video frames
        await comm.disconnect()
        await asyncio.wait_for(live.wait_closed(), 30)

    run(scenario())
    assert seen["size"] == (800, 600)
    assert len(seen["pids"]) == 3  # Xvnc, xfreerdp, ffmpeg: one group
    assert seen["listeners"] == []
    assert seen["dir_mode"] == 0o700 and seen["socket_mode"] == 0o600
    assert DEVICE_PASSWORD.encode() not in seen["processes"]
    assert "hello-airlock-rdp" in rdp_server.typed()
    assert not group_alive(seen["pgid"])
    assert desktop_dirs() == []
    session = Session.objects.get(user=user)
    assert session.protocol == "rdp" and session.client_kind == "browser"
    assert session.end_reason == "the vendor closed the remote desktop"
    video = recordings_dir() / session.recording
    assert video.suffix == ".webm" and video.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"
    from sessions.live.recording import file_sha256

    assert session.recording_sha256 == file_sha256(video)
    import json

    lines = (
        (recordings_dir() / rdp_consumer.input_log_name(session.recording)).read_text().splitlines()
    )
    events = [json.loads(line) for line in lines[1:]]
    assert "hello-airlock-rdp\r" in "".join(e[2] for e in events if e[1] == "i")
    assert any(e[1] == "m" and e[2] == "click left at 150,100" for e in events)
    end = AuditEvent.objects.get(action="session.end", target=f"session {session.code}")
    assert end.data["recording_sha256"] == session.recording_sha256
    # Written by the session's end callbacks, after the row: poll for it.
    wait_for(lambda: AuditEvent.objects.filter(action="session.input_log").exists(), 30)
    log_event = AuditEvent.objects.get(action="session.input_log")
    assert log_event.data["sha256"] == file_sha256(
        recordings_dir() / rdp_consumer.input_log_name(session.recording)
    )
    assert session.commands.filter(text="hello-airlock-rdp").exists()


def test_wrong_vaulted_credential_ends_with_the_device_refused_airlocks_credential(rdp_vendor):
    user, device, grant = rdp_vendor(password="not-the-password")
    cookie = session_cookie(user)

    async def scenario() -> dict:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        return await Browser(comm).ended()

    close = run(scenario())
    assert close["reason"] == "the device refused Airlock's credential"
    assert not Session.objects.exists()
    assert desktop_dirs() == []
    signal = Signal.objects.get(kind="rdp_credential_refused", device=device)
    assert signal.severity == "medium" and any("alerted" in a for a in signal.actions)


@pytest.mark.parametrize("case", ["no_grant", "locked_user", "password_only", "foreign_origin"])
def test_refused_websockets_close_with_nothing_relayed(
    case, rdp_vendor, make_vendor_user, rdp_server
):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user, otp=case != "password_only")
    origin = b"https://evil.example" if case == "foreign_origin" else ORIGIN
    if case == "no_grant":
        cookie = session_cookie(make_vendor_user())
    if case == "locked_user":
        from sessions.live.revocation import revoke

        revoke(user, reason="investigation", by=None)
    connections_before = rdp_server.connections()

    async def scenario() -> list:
        comm = communicator(grant, cookie, origin=origin)
        connected, _ = await comm.connect(timeout=30)
        frames = []
        if connected:
            while True:
                frame = await comm.receive_output(30)
                frames.append(frame)
                if frame["type"] == "websocket.close":
                    break
        return frames

    frames = run(scenario())
    assert not any(f.get("bytes") for f in frames)
    assert not Session.objects.exists()
    assert desktop_dirs() == []
    assert rdp_server.connections() == connections_before


def open_session(grant: Any, cookie: str) -> Any:
    async def opened() -> tuple[WebsocketCommunicator, Browser, Any]:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        browser = Browser(comm)
        await browser.handshake()
        return comm, browser, next(iter(rdp_consumer.RDP_SESSIONS.values()))

    return opened()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\x63\x00\x00\x00", "unknown RFB message (type 99)"),
        (struct.pack(">BxxxI", 6, 10 * 1024 * 1024), "over the limit"),
        (struct.pack(">Bxxxi", 6, -8), "extended clipboard"),
        (struct.pack(">BBxxI", 4, 7, 65), "invalid down flag"),
    ],
)
def test_bad_rfb_from_the_browser_ends_the_session_and_kills_the_desktop(
    payload, reason, rdp_vendor
):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    seen: dict[str, Any] = {}

    async def scenario() -> dict:
        comm, browser, live = await open_session(grant, cookie)
        seen["pgid"] = live.desktop.pgid
        await comm.send_to(bytes_data=payload)
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert reason in close["reason"]
    assert not group_alive(seen["pgid"])
    session = Session.objects.get(user=user)
    assert reason in session.end_reason and session.ended_at is not None


def test_input_flood_ends_the_session(rdp_vendor, settings):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    settings.RDP_MAX_INPUT_PER_SECOND = 50

    async def scenario() -> dict:
        comm, browser, live = await open_session(grant, cookie)
        burst = struct.pack(">BBHH", 5, 0, 10, 10) * 500
        await comm.send_to(bytes_data=burst)
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert "faster than Airlock accepts" in close["reason"]
    assert "faster than Airlock accepts" in Session.objects.get(user=user).end_reason


def test_clipboard_is_dropped_and_audited_when_the_grant_does_not_allow_uploads(rdp_vendor):
    from channels.db import database_sync_to_async

    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)

    async def scenario() -> None:
        comm, browser, live = await open_session(grant, cookie)
        text = b"secret-recipe"
        await comm.send_to(bytes_data=struct.pack(">BxxxI", 6, len(text)) + text)
        refused = AuditEvent.objects.filter(
            action="session.clipboard_refused", data__size=len(text)
        ).exists
        deadline = time.monotonic() + 30
        while not await database_sync_to_async(refused)():
            assert time.monotonic() < deadline, "the refused clipboard was never audited"
            await asyncio.sleep(0.05)
        await live.close("test over")

    run(scenario())
    assert AuditEvent.objects.filter(
        action="session.clipboard_refused", data__size=len(b"secret-recipe")
    ).exists()


def test_a_signal_for_the_device_ends_the_session_and_the_process_group(rdp_vendor):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    from sessions.anomalies.response import raise_signal

    seen: dict[str, Any] = {}

    async def scenario() -> dict:
        comm, browser, live = await open_session(grant, cookie)
        seen["pgid"] = live.desktop.pgid
        from channels.db import database_sync_to_async

        def sensor_reports() -> None:
            raise_signal(
                origin=Signal.Origin.DETECTOR,
                kind="ot_anomaly",
                severity="high",
                detail="unexpected S7 write",
                device=device,
                sessions=list(Session.objects.filter(user=user)),
            )

        await database_sync_to_async(sensor_reports)()
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert close["code"] == rdp_consumer.CLOSE_ENDED
    assert close["reason"]
    assert not group_alive(seen["pgid"])
    assert Session.objects.get(user=user).ended_at is not None


def test_a_changed_device_certificate_is_refused_and_signalled(rdp_vendor):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    device.rdp_certificate_sha256 = "00:" + device.rdp_certificate_sha256[3:]
    device.save()

    async def scenario() -> dict:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        return await Browser(comm).ended()

    close = run(scenario())
    assert "does not match the pinned one" in close["reason"]
    assert not Session.objects.exists()
    assert Signal.objects.filter(kind="rdp_certificate_changed", device=device).exists()


def test_over_the_session_limit_the_vendor_reads_that_airlock_is_busy(rdp_vendor, settings):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    settings.RDP_MAX_SESSIONS = 0

    async def scenario() -> dict:
        comm = communicator(grant, cookie)
        await comm.connect(timeout=30)
        return await Browser(comm).ended()

    close = run(scenario())
    assert close["reason"].startswith("Airlock is busy")
    assert desktop_dirs() == []


def test_a_stopped_video_recorder_ends_the_session(rdp_vendor):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)

    async def scenario() -> dict:
        comm, browser, live = await open_session(grant, cookie)
        live.desktop.ffmpeg.kill()
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert close["reason"] == "the session could not be recorded, so it was ended"


def test_tls_only_device_blocks_input_until_a_logon_that_never_comes(rdp_vendor, settings):
    from tests.support.rdpserver import pin_rdp_device, start_rdp_server

    tls_server = start_rdp_server(security="tls")
    try:
        user, device, grant = rdp_vendor()
        pin_rdp_device(device, tls_server, security="tls")
        cookie = session_cookie(user)
        settings.RDP_LOGIN_TIMEOUT = 3

        async def scenario() -> dict:
            try:
                comm, browser, live = await open_session(grant, cookie)
                await browser.click(150, 100)
                await browser.type("typed-at-a-login-screen\n")
                return await browser.ended()
            except ConnectionError as closed:
                return {"reason": str(closed)}

        close = run(scenario())
        # FreeRDP's shadow server checks a TLS login with PAM after the
        # connection is active and drops an unknown account, so the session
        # may end that way before the login timeout; either way nothing the
        # vendor typed reached the device, and no logon was ever reported.
        assert (
            "did not get past its login screen" in close["reason"]
            or close["reason"] == f"the remote desktop connection to {device.slug} ended"
        )
        assert "typed-at-a-login-screen" not in tls_server.typed()
        assert Session.objects.get(user=user).ended_at is not None
    finally:
        tls_server.stop()


def test_orphaned_desktops_of_a_dead_broker_are_killed(settings, tmp_path):
    import subprocess

    from sessions.doors.rdp.desktop import cleanup_orphans

    settings.RDP_RUN_DIR = tmp_path / "rdp"
    orphan = tmp_path / "rdp" / "deadbeef"
    orphan.mkdir(parents=True)
    # The group's leader names the desktop's directory, as an Xvnc does.
    proc = subprocess.Popen(["sh", "-c", "sleep 300", str(orphan)], process_group=0)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (orphan / "owner").write_text(f"{dead.pid} {proc.pid}\n")
    assert cleanup_orphans() == 1
    assert proc.wait(10) == -9
    assert not orphan.exists()


def test_an_approver_watches_read_only_and_their_keys_never_reach_the_device(
    rdp_vendor, rdp_server, make_approver, make_group, make_zone
):
    from broker.models import ApprovalRule

    group = make_group("OT security")
    zone = make_zone()
    ApprovalRule.objects.create(zone=zone, group=group, count=1)
    approver = make_approver("otto", groups=[group])
    user, device, grant = rdp_vendor(zone=zone)
    cookie = session_cookie(user)
    watcher_cookie = session_cookie(approver)

    async def scenario() -> tuple:
        comm, browser, live = await open_session(grant, cookie)
        watch = WebsocketCommunicator(
            application,
            f"/ws/rdp-watch/{live.code}/",
            subprotocols=["binary"],
            headers=[
                (b"host", HOST),
                (b"origin", ORIGIN),
                (b"cookie", f"{settings.SESSION_COOKIE_NAME}={watcher_cookie}".encode()),
            ],
        )
        connected, _ = await watch.connect(timeout=30)
        assert connected
        watcher = Browser(watch)
        size = await watcher.handshake()
        await watcher.click(150, 100)
        await watcher.type("from-the-watcher\n")
        await browser.click(150, 100)
        await browser.type("from-the-vendor\n")
        deadline = time.monotonic() + 20
        while "from-the-vendor" not in rdp_server.typed() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await live.terminate("the approver ended it", by="otto")
        close = await watcher.ended()
        return size, close

    size, close = run(scenario())
    assert size == (800, 600)
    assert "from-the-vendor" in rdp_server.typed()
    assert "from-the-watcher" not in rdp_server.typed()
    assert "the approver ended it" in close["reason"]
    assert AuditEvent.objects.filter(action="session.watch", actor=approver.username).exists()


def test_pinrdpcert_shows_the_fingerprint_and_pins_it_only_with_yes(rdp_server, make_device):
    from io import StringIO

    from django.core.management import call_command

    device = make_device(ssh_host="", rdp_host="127.0.0.1", rdp_port=rdp_server.port)
    out = StringIO()
    call_command("pinrdpcert", device.slug, stdout=out)
    assert rdp_server.fingerprint in out.getvalue()
    device.refresh_from_db()
    assert device.rdp_certificate_sha256 == ""
    call_command("pinrdpcert", device.slug, "--yes", stdout=StringIO())
    device.refresh_from_db()
    assert device.rdp_certificate_sha256 == rdp_server.fingerprint
    assert AuditEvent.objects.filter(action="device.rdp_certificate_pinned").exists()


def test_a_reload_within_the_grace_period_reattaches_to_the_same_session(
    rdp_vendor, rdp_server, settings
):
    user, device, grant = rdp_vendor()
    settings.RDP_DISCONNECT_GRACE = 5
    cookie = session_cookie(user)

    async def scenario() -> tuple:
        comm, browser, live = await open_session(grant, cookie)
        await comm.disconnect()
        await asyncio.sleep(0.5)
        comm2, browser2, live2 = await open_session(grant, cookie)
        await browser2.click(150, 100)
        await browser2.type("after-reload\n")
        deadline = time.monotonic() + 20
        while "after-reload" not in rdp_server.typed() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        same = live2 is live and not live.ended
        await comm2.disconnect()
        await asyncio.wait_for(live.wait_closed(), 30)
        return same, live.end_reason

    same, reason = run(scenario())
    assert same
    assert "after-reload" in rdp_server.typed()
    assert Session.objects.filter(user=user).count() == 1
    assert reason == "the vendor closed the remote desktop"


def test_bad_input_in_one_session_leaves_another_session_running(rdp_vendor, rdp_server):
    user, device, grant = rdp_vendor()
    other, other_device, other_grant = rdp_vendor()
    cookie, other_cookie = session_cookie(user), session_cookie(other)

    async def scenario() -> tuple:
        comm, browser, live = await open_session(grant, cookie)
        comm2 = communicator(other_grant, other_cookie)
        assert (await comm2.connect(timeout=30))[0]
        browser2 = Browser(comm2)
        await browser2.handshake()
        live2 = next(v for v in rdp_consumer.RDP_SESSIONS.values() if v is not live)
        await comm.send_to(bytes_data=b"\xfe\x00\x00\x00")
        close = await browser.ended()
        await browser2.click(150, 100)
        await browser2.type("still-here\n")
        deadline = time.monotonic() + 20
        while "still-here" not in rdp_server.typed() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        alive = not live2.ended and live2.desktop.group_alive()
        await live2.close("test over")
        return close, alive

    close, alive = run(scenario())
    assert "unknown RFB message" in close["reason"]
    assert alive
    assert "still-here" in rdp_server.typed()


def test_a_device_that_drops_the_connection_ends_the_session_with_a_clear_reason(
    rdp_vendor, rdp_server
):
    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    seen: dict[str, Any] = {}

    async def scenario() -> dict:
        comm, browser, live = await open_session(grant, cookie)
        seen["pgid"] = live.desktop.pgid
        rdp_server.procs[-1].kill()  # the shadow server: the device goes away
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert close["reason"] == f"the remote desktop connection to {device.slug} ended"
    assert not group_alive(seen["pgid"])


def test_a_lock_on_the_user_and_the_end_of_the_grant_end_rdp_sessions_like_ssh_ones(rdp_vendor):
    from datetime import timedelta

    from channels.db import database_sync_to_async
    from django.utils import timezone

    from broker.models import Grant
    from sessions.live.revocation import revoke

    user, device, grant = rdp_vendor()
    short_user, _, short_grant = rdp_vendor()
    cookie, short_cookie = session_cookie(user), session_cookie(short_user)

    async def scenario() -> tuple:
        comm, browser, live = await open_session(grant, cookie)
        await database_sync_to_async(revoke)(user, reason="investigation", by=None)
        locked = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        # The window closes a few seconds after this session opens (set only
        # now, so a slow machine does not reach the end before the opening).
        await database_sync_to_async(Grant.objects.filter(pk=short_grant.pk).update)(
            ends_at=timezone.now() + timedelta(seconds=10)
        )
        comm2, browser2, live2 = await open_session(short_grant, short_cookie)
        ended = await browser2.ended(timeout=30)
        await asyncio.wait_for(live2.wait_closed(), 30)
        return locked, ended

    locked, ended = run(scenario())
    assert "investigation" in locked["reason"]
    assert "ended at" in ended["reason"]
    assert Session.objects.filter(ended_at=None).count() == 0


def test_a_zone_asking_for_a_code_per_connection_refuses_a_websocket_without_one(
    rdp_vendor, make_zone, rdp_server
):
    zone = make_zone(requires_connection_otp=True)
    user, device, grant = rdp_vendor(zone=zone)
    cookie = session_cookie(user)
    connections_before = rdp_server.connections()

    async def scenario() -> dict:
        comm = communicator(grant, cookie)
        await comm.connect(timeout=30)
        return await Browser(comm).ended()

    close = run(scenario())
    assert "one-time code for every connection" in close["reason"]
    assert not Session.objects.exists()
    assert rdp_server.connections() == connections_before


def test_the_desktop_of_a_killed_broker_process_dies_with_it(rdp_server, tmp_path):
    """A broker killed with SIGKILL leaves no desktop logged in to a device."""
    import signal
    import subprocess
    import sys
    import textwrap

    from tests.support.rdpserver import DEVICE_PASSWORD as PASSWORD
    from tests.support.rdpserver import DEVICE_USER as ACCOUNT

    run_dir = Path(tempfile_dir())
    script = textwrap.dedent(f"""
        import asyncio, os, sys, django
        os.environ["DJANGO_SETTINGS_MODULE"] = "broker.settings"
        os.environ["AIRLOCK_RDP_RUN_DIR"] = {str(run_dir)!r}
        django.setup()
        from sessions.doors.rdp.desktop import Desktop, RDPTarget
        async def main():
            d = Desktop(width=800, height=600, allow_upload=False, allow_download=False)
            await d.start_display()
            await d.connect(RDPTarget(slug="dev", host="127.0.0.1", port={rdp_server.port},
                                      security="nla", fingerprint={rdp_server.fingerprint!r},
                                      username={ACCOUNT!r}, domain="", secret={PASSWORD!r}),
                            timeout=30)
            print(d.pgid, flush=True)
            await asyncio.sleep(300)
        asyncio.run(main())
    """)
    broker = subprocess.Popen(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    try:
        pgid = int(broker.stdout.readline())
        assert group_alive(pgid)
        broker.send_signal(signal.SIGKILL)
        broker.wait(10)
        deadline = time.monotonic() + 10
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(pgid)
    finally:
        if broker.poll() is None:
            broker.kill()
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="arl-kill-")


def test_signing_out_of_the_portal_ends_the_remote_desktop(rdp_vendor):
    from django.test import Client
    from django.urls import reverse

    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    seen: dict[str, Any] = {}

    async def scenario() -> dict:
        from channels.db import database_sync_to_async

        def sign_out() -> int:
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = cookie
            return client.post(reverse("logout")).status_code

        comm, browser, live = await open_session(grant, cookie)
        seen["pgid"] = live.desktop.pgid
        assert await database_sync_to_async(sign_out)() in (200, 302)
        close = await browser.ended()
        await asyncio.wait_for(live.wait_closed(), 30)
        return close

    close = run(scenario())
    assert close["code"] == rdp_consumer.CLOSE_ENDED
    assert "signed out of the portal" in close["reason"]
    assert "signed out of the portal" in Session.objects.get(user=user).end_reason
    assert not group_alive(seen["pgid"])


def test_a_host_without_the_rdp_packages_says_what_to_install(rdp_vendor, monkeypatch):
    from sessions.doors.rdp import desktop as rdp

    user, device, grant = rdp_vendor()
    cookie = session_cookie(user)
    # This host's programs stay where they are; the broker looks on an empty PATH.
    monkeypatch.setattr(rdp, "CHILD_PATH", "/nonexistent")
    monkeypatch.setattr(rdp.missing_programs_sentence, "__defaults__", ("/nonexistent",))

    async def scenario() -> dict:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        return await Browser(comm).ended()

    close = run(scenario())
    assert close["code"] == rdp_consumer.CLOSE_REFUSED
    assert "browser RDP is unavailable" in close["reason"]
    assert "tigervnc-standalone-server" in close["reason"]
    assert not rdp_consumer.RDP_SESSIONS and not desktop_dirs()
    assert not Session.objects.filter(user=user).exists()


def test_a_grant_allowing_the_clipboard_opens_the_remote_desktop(rdp_vendor):
    # xfreerdp with its clipboard channel logs little after connecting: its
    # "connection active" line must still reach the broker at once.
    user, device, grant = rdp_vendor(allow_upload=True, allow_download=True)
    cookie = session_cookie(user)

    async def scenario() -> tuple:
        comm, browser, live = await open_session(grant, cookie)
        arguments = Path(f"/proc/{live.desktop.rdp.pid}/cmdline").read_bytes().split(b"\0")
        await comm.disconnect()
        await asyncio.wait_for(live.wait_closed(), 30)
        return arguments, live.desktop.states

    arguments, states = run(scenario())
    assert b"+clipboard" in arguments
    assert "ACTIVE" in states
