"""The browser terminal's websocket consumer, driven through the real ASGI
application (Channels' AuthMiddlewareStack and the URL router) with
channels.testing.WebsocketCommunicator; the device is a real sshd."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.urls import reverse
from django.utils import timezone
from django_otp import devices_for_user

from broker.asgi import application
from broker.models import AuditEvent
from sessions.doors.web import terminal
from sessions.live.revocation import revoke
from sessions.models import Command, Session
from tests.support.browser_session import session_cookie
from tests.support.sshd import device_sshd, pin_device  # noqa: F401  (fixture)
from tests.support.websockets import run, socket

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]

ORIGIN = b"http://127.0.0.1:8000"
HOST = b"127.0.0.1:8000"


@pytest.fixture
def browser_vendor(device_sshd, make_vendor_user, make_device, make_grant):
    def make(**grant_kw: Any) -> Any:
        user = make_vendor_user()
        device = (
            make_device(zone=grant_kw.pop("zone", None)) if "zone" in grant_kw else make_device()
        )
        pin_device(device, device_sshd)
        grant = make_grant(user, device, **grant_kw)
        return user, device, grant

    return make


def communicator(
    grant: Any, cookie: str | None, *, origin: bytes = ORIGIN, query: str = "cols=100&rows=30"
) -> WebsocketCommunicator:
    return socket(f"/ws/terminal/{grant.code}/?{query}", cookie, host=HOST, origin=origin)


async def read_until(comm: WebsocketCommunicator, predicate: Any, timeout: float = 20) -> list:
    """Collect frames until predicate(frames) holds (a hang guard only)."""
    frames: list = []
    deadline = time.monotonic() + timeout
    while not predicate(frames):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching frame; got {frames!r}")
        frames.append(await comm.receive_output(remaining))
    return frames


def text_of(frames: list) -> str:
    return b"".join(f.get("bytes") or b"" for f in frames if f["type"] == "websocket.send").decode(
        errors="replace"
    )


def messages(frames: list) -> list[dict]:
    return [
        json.loads(f["text"]) for f in frames if f["type"] == "websocket.send" and f.get("text")
    ]


def closed(frames: list) -> bool:
    return any(f["type"] == "websocket.close" for f in frames)


def close_code(frames: list) -> int | None:
    return next((f.get("code") for f in frames if f["type"] == "websocket.close"), None)


async def open_terminal(comm: WebsocketCommunicator) -> list:
    connected, _ = await comm.connect(timeout=20)
    assert connected
    return await read_until(
        comm, lambda fs: any(m.get("state") == "connected" for m in messages(fs)) or closed(fs)
    )


def test_vendor_runs_a_command_and_it_is_recorded_and_indexed(browser_vendor, device_sshd):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        frames = await open_terminal(comm)
        await comm.send_to(bytes_data=b"echo hello-$((40+2))\r")
        frames += await read_until(comm, lambda fs: "hello-42" in text_of(fs))
        await comm.disconnect()
        return frames

    run(scenario())
    session = Session.objects.get(user=user)
    assert session.client_kind == "browser"
    assert session.ended_at is not None and session.recording_sha256
    assert list(Command.objects.filter(session=session).values_list("text", flat=True)) == [
        "echo hello-$((40+2))"
    ]
    assert any("Accepted password" in line for line in device_sshd.logins())


def test_session_that_passed_only_the_password_is_closed_with_nothing_relayed(
    browser_vendor, device_sshd
):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user, otp=False)
    logins_before = len(device_sshd.logins())

    async def scenario() -> tuple:
        comm = communicator(grant, cookie)
        connected, code = await comm.connect(timeout=20)
        await comm.disconnect()
        return connected, code

    connected, code = run(scenario())
    assert connected is False
    assert code == terminal.CLOSE_REFUSED
    assert not Session.objects.exists()
    assert len(device_sshd.logins()) == logins_before
    assert AuditEvent.objects.filter(action="session.denied", data__reason="not_verified").exists()


def test_otp_device_that_was_removed_no_longer_verifies_the_session(browser_vendor):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)
    for device in devices_for_user(user, confirmed=None):
        device.delete()

    async def scenario() -> tuple:
        comm = communicator(grant, cookie)
        result = await comm.connect(timeout=20)
        await comm.disconnect()
        return result

    assert run(scenario()) == (False, terminal.CLOSE_REFUSED)
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"null",
        b"",
        b"http://127.0.0.1:9999",
        b"javascript://127.0.0.1:8000",
    ],
)
def test_websocket_from_another_origin_is_refused(browser_vendor, origin):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> tuple:
        comm = communicator(grant, cookie, origin=origin)
        result = await comm.connect(timeout=20)
        await comm.disconnect()
        return result

    assert run(scenario()) == (False, terminal.CLOSE_REFUSED)
    assert not Session.objects.exists()


def test_trusted_origin_from_settings_is_accepted(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://airlock.plant.example"]
    assert terminal.origin_allowed(
        {b"origin": b"https://airlock.plant.example", b"host": b"10.0.0.5:8000"}
    )
    assert not terminal.origin_allowed(
        {b"origin": b"https://other.plant.example", b"host": b"10.0.0.5:8000"}
    )


def test_another_vendors_grant_is_refused_with_a_reason(browser_vendor, make_vendor_user):
    _, _, grant = browser_vendor()
    stranger = make_vendor_user()
    cookie = session_cookie(stranger)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=20)
        assert connected
        return await read_until(comm, closed)

    frames = run(scenario())
    assert close_code(frames) == terminal.CLOSE_REFUSED
    assert "access denied" in messages(frames)[-1]["reason"]
    assert not Session.objects.exists()


def test_denial_from_authorize_reaches_the_vendor(browser_vendor):
    user, device, grant = browser_vendor(
        starts_at=timezone.now() - timedelta(hours=2), ends_at=timezone.now() - timedelta(hours=1)
    )
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await comm.connect(timeout=20)
        return await read_until(comm, closed)

    frames = run(scenario())
    assert "ended at" in messages(frames)[-1]["reason"]
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "resize", "cols": "wide", "rows": 30}',
        '{"type": "resize", "cols": 0, "rows": 30}',
        '{"type": "resize", "cols": 100000, "rows": 30}',
        '{"type": "resize", "cols": true, "rows": 30}',
        '{"type": "resize"}',
        "[1, 2, 3]",
        "not json at all",
    ],
)
def test_malformed_control_message_ends_the_session_with_a_clear_message(browser_vendor, message):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        await comm.send_to(text_data=message)
        return await read_until(comm, closed)

    frames = run(scenario())
    assert close_code(frames) == terminal.CLOSE_BAD_MESSAGE
    assert "does not accept" in messages(frames)[-1]["reason"]
    session = Session.objects.get(user=user)
    assert session.ended_at is not None
    assert "does not accept" in session.end_reason


def test_valid_resize_reaches_the_device_and_the_recording(browser_vendor):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        frames = await open_terminal(comm)
        await comm.send_to(text_data=json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await comm.send_to(bytes_data=b"stty size\r")
        frames += await read_until(comm, lambda fs: "43 132" in text_of(fs))
        await comm.disconnect()
        return frames

    run(scenario())
    from sessions.evidence.review import read_recording

    session = Session.objects.get(user=user)
    assert b'"r", "132x43"' in read_recording(session)


def test_oversized_frame_closes_the_socket_and_ends_the_session(browser_vendor):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        await comm.send_to(bytes_data=b"x" * (terminal.MAX_FRAME_BYTES + 1))
        return await read_until(comm, closed)

    frames = run(scenario())
    assert close_code(frames) == terminal.CLOSE_TOO_BIG
    assert "over the limit" in messages(frames)[-1]["reason"]
    assert Session.objects.get(user=user).ended_at is not None


def test_revoking_the_grant_ends_the_terminal_with_the_reason(browser_vendor, make_user):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)
    approver = make_user("approver1")

    async def scenario() -> list:
        from channels.db import database_sync_to_async

        comm = communicator(grant, cookie)
        await open_terminal(comm)
        await database_sync_to_async(revoke)(
            grant, reason="maintenance window cancelled", by=approver
        )
        return await read_until(comm, closed)

    frames = run(scenario())
    final = messages(frames)[-1]
    assert final["type"] == "ended"
    assert "maintenance window cancelled" in final["reason"]
    assert "maintenance window cancelled" in text_of(frames) or final["reason"]
    session = Session.objects.get(user=user)
    assert "maintenance window cancelled" in session.end_reason


def test_grant_end_closes_the_terminal_with_session_ended(browser_vendor):
    user, device, grant = browser_vendor(ends_at=timezone.now() + timedelta(seconds=8))
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        return await read_until(comm, closed, timeout=30)

    frames = run(scenario())
    final = messages(frames)[-1]
    assert final["type"] == "ended"
    assert f"your access to {device.slug} ended" in final["reason"]


def test_zone_with_connection_otp_needs_a_fresh_ticket(browser_vendor, make_zone):
    zone = make_zone(requires_connection_otp=True)
    user, device, grant = browser_vendor(zone=zone)
    cookie = session_cookie(user)

    async def attempt() -> list:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=20)
        assert connected
        frames = await read_until(
            comm, lambda fs: closed(fs) or any(m.get("state") == "connected" for m in messages(fs))
        )
        await comm.disconnect()
        return frames

    frames = run(attempt())
    assert "one-time code" in messages(frames)[-1]["reason"]
    assert not Session.objects.exists()

    store = SessionStore(session_key=cookie)
    terminal.issue_connection_ticket(store, str(grant.code))
    store.save()
    frames = run(attempt())
    assert any(m.get("state") == "connected" for m in messages(frames))
    # The ticket is used up: a second connection asks again.
    frames = run(attempt())
    assert "one-time code" in messages(frames)[-1]["reason"]


def test_exiting_the_shell_ends_the_session_and_says_so(browser_vendor):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        await comm.send_to(bytes_data=b"exit\r")
        return await read_until(comm, closed)

    frames = run(scenario())
    assert close_code(frames) == terminal.CLOSE_ENDED
    assert messages(frames)[-1] == {"type": "ended", "reason": "the device closed the session"}
    session = Session.objects.get(user=user)
    assert session.end_reason == "the device closed the session"
    assert len(session.recording_sha256) == 64


def test_nothing_typed_before_the_session_opens_reaches_the_device(browser_vendor, device_sshd):
    user, device, grant = browser_vendor(
        ends_at=timezone.now() - timedelta(seconds=1), starts_at=timezone.now() - timedelta(hours=1)
    )
    cookie = session_cookie(user)
    logins_before = len(device_sshd.logins())

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await comm.connect(timeout=20)
        await comm.send_to(bytes_data=b"touch /tmp/should-not-exist\r")
        return await read_until(comm, closed)

    frames = run(scenario())
    assert close_code(frames) == terminal.CLOSE_REFUSED
    assert len(device_sshd.logins()) == logins_before
    assert not Session.objects.exists()


def test_terminal_ends_when_the_portal_sign_in_expires(browser_vendor, settings):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)
    store = SessionStore(session_key=cookie)
    store["airlock_started_at"] = time.time() - settings.SESSION_ABSOLUTE_SECONDS + 10
    store.save()

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        return await read_until(comm, closed, timeout=40)

    frames = run(scenario())
    assert messages(frames)[-1] == {
        "type": "ended",
        "reason": "your portal sign-in expired; sign in again to reconnect",
    }


def test_detectors_watch_the_browser_terminal_too(browser_vendor):
    """Keys at machine speed (a script driving the browser) raise the same
    signal as on the native gateway, and the default response ends it."""
    from sessions.anomalies.models import Signal

    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        # Twice the detector's run of fast keys, so one stall cannot hide it.
        for ch in b"echo a machine is typing this line quickly; echo and then this one too":
            await comm.send_to(bytes_data=bytes([ch]))
        return await read_until(comm, closed, timeout=30)

    frames = run(scenario())
    assert messages(frames)[-1]["type"] == "ended"
    session = Session.objects.get(user=user)
    signal = Signal.objects.get(kind="machine_speed_input")
    assert list(signal.sessions.all()) == [session]
    assert session.ended_at is not None


def test_signing_out_of_the_portal_ends_the_browser_terminal(browser_vendor):
    user, device, grant = browser_vendor()
    cookie = session_cookie(user)

    async def scenario() -> list:
        from channels.db import database_sync_to_async
        from django.test import Client

        def sign_out() -> int:
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = cookie
            return client.post(reverse("logout")).status_code

        comm = communicator(grant, cookie)
        await open_terminal(comm)
        assert await database_sync_to_async(sign_out)() in (200, 302)
        return await read_until(comm, closed)

    frames = run(scenario())
    final = messages(frames)[-1]
    assert final["type"] == "ended" and "signed out of the portal" in final["reason"]
    assert "signed out of the portal" in Session.objects.get(user=user).end_reason
