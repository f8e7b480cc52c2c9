"""Live watch: an approver follows a live browser-terminal session read-only
over the channel layer; the watcher's own session and zone are checked by the
consumer. Real session core, real sshd as the device."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.urls import reverse

from broker.asgi import application
from broker.models import ApprovalRule, AuditEvent
from sessions.doors.web import terminal
from sessions.live.core import LiveSession
from sessions.live.revocation import revoke
from sessions.models import Command, Session
from tests.support.browser_session import session_cookie
from tests.support.sshd import device_sshd, pin_device  # noqa: F401  (fixture)
from tests.support.websockets import run, socket
from tests.test_terminal_consumer import (
    HOST,
    ORIGIN,
    closed,
    messages,
    open_terminal,
    read_until,
    text_of,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def scene(
    device_sshd,
    make_vendor_user,
    make_device,
    make_grant,
    make_zone,
    make_group,
    make_approver,
    make_user,
):
    zone = make_zone(name="Packaging line")
    group = make_group("Line approvers")
    ApprovalRule.objects.create(zone=zone, group=group, count=1)
    vendor = make_vendor_user("vera")
    device = make_device("filler-plc", zone=zone)
    pin_device(device, device_sshd)
    grant = make_grant(vendor, device)
    people = {
        "vendor": vendor,
        "approver": make_approver("olga", groups=[group]),
        "other_approver": make_approver("otto", groups=[make_group("Boiler approvers")]),
        "stranger": make_vendor_user("mallory"),
    }
    cookies = {name: session_cookie(user) for name, user in people.items()}
    return {**people, "grant": grant, "device": device, "cookie": cookies}


def test_approver_watches_the_session_live_and_cannot_type_into_it(scene):
    async def scenario() -> tuple[list, list]:
        vendor = socket(f"/ws/terminal/{scene['grant'].code}/", scene["cookie"]["vendor"])
        await open_terminal(vendor)
        await vendor.send_to(bytes_data=b"echo before-$((1+1))\r")
        await read_until(vendor, lambda fs: "before-2" in text_of(fs))
        code = await database_sync_to_async(
            lambda: str(Session.objects.get(user=scene["vendor"]).code)
        )()
        watcher = socket(f"/ws/watch/{code}/", scene["cookie"]["approver"])
        connected, _ = await watcher.connect(timeout=20)
        assert connected
        seen = await read_until(watcher, lambda fs: "before-2" in text_of(fs))
        # Keystrokes from the watcher go nowhere.
        await watcher.send_to(bytes_data=b"echo from-the-watcher\r")
        await vendor.send_to(bytes_data=b"echo while-$((1+2))\r")
        seen += await read_until(watcher, lambda fs: "while-3" in text_of(fs))
        await database_sync_to_async(revoke)(
            await database_sync_to_async(Session.objects.get)(code=code),
            reason="watched and ended",
            by=scene["approver"],
        )
        seen += await read_until(watcher, closed)
        vendor_frames = await read_until(vendor, closed)
        return seen, vendor_frames

    seen, vendor_frames = run(scenario())
    assert messages(seen)[0]["state"] == "watching"
    assert messages(seen)[-1] == {"type": "ended", "reason": "watched and ended"}
    assert "from-the-watcher" not in text_of(vendor_frames)
    session = Session.objects.get(user=scene["vendor"])
    texts = list(Command.objects.filter(session=session).values_list("text", flat=True))
    assert texts == ["echo before-$((1+1))", "echo while-$((1+2))"]
    assert AuditEvent.objects.filter(
        action="session.watch", actor="olga", target=f"session {session.code}"
    ).exists()


@pytest.mark.parametrize("who", ["other_approver", "stranger", "vendor"])
def test_only_the_zones_approvers_may_watch(scene, who):
    async def scenario() -> tuple:
        vendor = socket(f"/ws/terminal/{scene['grant'].code}/", scene["cookie"]["vendor"])
        await open_terminal(vendor)
        code = await database_sync_to_async(
            lambda: str(Session.objects.get(user=scene["vendor"]).code)
        )()
        watcher = socket(f"/ws/watch/{code}/", scene["cookie"][who])
        result = await watcher.connect(timeout=20)
        await vendor.disconnect()
        return result

    assert run(scenario()) == (False, terminal.CLOSE_REFUSED)


def test_watch_from_another_origin_is_refused(scene):
    async def scenario() -> tuple:
        vendor = socket(f"/ws/terminal/{scene['grant'].code}/", scene["cookie"]["vendor"])
        await open_terminal(vendor)
        code = await database_sync_to_async(
            lambda: str(Session.objects.get(user=scene["vendor"]).code)
        )()
        watcher = socket(
            f"/ws/watch/{code}/", scene["cookie"]["approver"], origin=b"http://evil.example"
        )
        result = await watcher.connect(timeout=20)
        await vendor.disconnect()
        return result

    assert run(scenario()) == (False, terminal.CLOSE_REFUSED)


def test_watch_page_is_for_the_zones_approvers(scene, verified_client):
    from tests.support.recordings import recorded_session

    session = recorded_session(scene["vendor"], scene["device"], scene["grant"])
    Session.objects.filter(pk=session.pk).update(ended_at=None)
    url = reverse("session-watch", args=[session.code])
    page = verified_client(scene["approver"]).get(url)
    assert page.status_code == 200
    assert f"/ws/watch/{session.code}/" in page.content.decode()
    assert verified_client(scene["other_approver"]).get(url).status_code == 404


def test_watcher_falls_back_to_the_recording_when_no_holder_answers(scene):
    from tests.support.recordings import recorded_session

    session = recorded_session(scene["vendor"], scene["device"], scene["grant"])
    Session.objects.filter(pk=session.pk).update(ended_at=None)

    async def scenario() -> list:
        watcher = socket(f"/ws/watch/{session.code}/", scene["cookie"]["approver"])
        connected, _ = await watcher.connect(timeout=20)
        assert connected
        frames = await read_until(watcher, lambda fs: "hello-airlock" in text_of(fs), timeout=20)
        await watcher.disconnect()
        return frames

    frames = run(scenario())
    assert messages(frames)[0] == {"type": "status", "state": "watching", "cols": 100, "rows": 30}
