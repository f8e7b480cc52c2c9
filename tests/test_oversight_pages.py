"""Approver oversight: the live sessions page across gateways, terminate
with a reason (and optionally lock the user or the device) behind step-up,
the signals list, and who may see and do what."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from broker.models import AuditEvent, Lock
from sessions.models import Command, Gateway, Session, Signal


@pytest.fixture(autouse=True)
def in_memory(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def plant(
    make_vendor_user: Any,
    make_device: Any,
    make_grant: Any,
    make_group: Any,
    make_zone: Any,
    make_approver: Any,
    make_user: Any,
) -> dict[str, Any]:
    ops = make_group("Plant operations")
    other_group = make_group("Water works")
    zone = make_zone(rules=[(ops, 1)])
    other_zone = make_zone(rules=[(other_group, 1)])
    device = make_device("plc-7", zone=zone)
    elsewhere = make_device("pump-1", zone=other_zone)
    alice = make_vendor_user("alice")
    session = Session.objects.create(
        user=alice,
        device=device,
        grant=make_grant(alice, device),
        source_ip="192.0.2.5",
        gateway_id="gw-a",
        bytes_in=321,
        bytes_out=65432,
        last_seen_at=timezone.now(),
    )
    Command.objects.create(session=session, t=1.0, text="read_register 40001")
    Command.objects.create(session=session, t=2.5, text="show status")
    hidden = Session.objects.create(
        user=alice, device=elsewhere, grant=make_grant(alice, elsewhere), gateway_id="gw-b"
    )
    Gateway.objects.create(name="gw-a", host="gw-host-a")
    Gateway.objects.create(
        name="gw-b", host="gw-host-b", seen_at=timezone.now() - timedelta(minutes=5)
    )
    Signal.objects.create(
        origin="sensor",
        kind="Scan::Port_Scan",
        severity="medium",
        detail="scan seen",
        device=device,
    ).sessions.add(session)
    Signal.objects.create(
        origin="sensor", kind="other-zone-thing", severity="low", detail="x", device=elsewhere
    )
    return {
        "olga": make_approver("olga", groups=[ops]),
        "alice": alice,
        "session": session,
        "hidden": hidden,
        "device": device,
        "auditor": make_user("audrey", is_auditor=True),
    }


def test_the_live_page_lists_who_what_since_bytes_last_command_and_signals(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    page = verified_client(plant["olga"]).get("/sessions/live/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "alice" in text and "plc-7" in text and "192.0.2.5" in text
    assert "321 / 65432" in text
    assert "show status" in text and "read_register" not in text  # the last command only
    assert "gw-a" in text
    assert str(plant["session"].code) in text


def test_an_approver_sees_only_sessions_in_their_zones(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    text = verified_client(plant["olga"]).get("/sessions/live/").content.decode()
    assert str(plant["hidden"].code) not in text and "pump-1" not in text


def test_an_auditor_sees_every_session_but_cannot_terminate(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    client = verified_client(plant["auditor"])
    text = client.get("/sessions/live/").content.decode()
    assert "pump-1" in text and "read only" in text
    assert "not responding" in text  # gw-b has not beaten for five minutes
    response = client.post(f"/sessions/{plant['session'].code}/terminate/", {"reason": "x"})
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(action="session.terminated").exists()


def test_a_vendor_may_not_open_the_oversight_pages(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    client = verified_client(plant["alice"])
    assert client.get("/sessions/live/").status_code == 403
    assert client.get("/sessions/signals/").status_code == 403
    assert (
        client.post(f"/sessions/{plant['session'].code}/terminate/", {"reason": "x"}).status_code
        == 404
    )


def test_terminating_publishes_the_reason_and_audits(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"airlock.session.{plant['session'].code}", channel)

    response = verified_client(plant["olga"]).post(
        f"/sessions/{plant['session'].code}/terminate/", {"reason": "unplanned change"}
    )

    assert response.status_code == 302
    assert async_to_sync(layer.receive)(channel) == {
        "type": "session.terminate",
        "reason": "unplanned change",
        "by": "olga",
    }
    event = AuditEvent.objects.get(action="session.terminated")
    assert event.actor == "olga" and event.data["reason"] == "unplanned change"
    assert not Lock.objects.exists()


@pytest.mark.parametrize("what", ["user", "device"])
def test_terminating_can_lock_the_user_or_the_device(
    verified_client: Any, plant: dict[str, Any], what: str
) -> None:
    verified_client(plant["olga"]).post(
        f"/sessions/{plant['session'].code}/terminate/",
        {"reason": "stop now", "lock": what, "lock_minutes": "240"},
    )
    lock = Lock.objects.get()
    assert (lock.user if what == "user" else lock.device) == (
        plant["alice"] if what == "user" else plant["device"]
    )
    assert timedelta(hours=3, minutes=59) < lock.expires_at - timezone.now() <= timedelta(hours=4)
    assert lock.created_by == plant["olga"]


def test_terminate_without_a_reason_or_with_a_bad_lock_does_nothing(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    client = verified_client(plant["olga"])
    url = f"/sessions/{plant['session'].code}/terminate/"
    client.post(url, {"reason": "  "})
    client.post(url, {"reason": "x", "lock": "vendor"})
    client.post(url, {"reason": "x", "lock": "user", "lock_minutes": "-5"})
    assert not AuditEvent.objects.filter(action__in=["session.terminated", "lock.created"]).exists()


def test_terminate_needs_a_fresh_otp(verified_client: Any, plant: dict[str, Any]) -> None:
    client = verified_client(plant["olga"])
    session = client.session
    session["airlock_otp_at"] = 0  # the step-up has gone stale
    session.save()
    response = client.post(f"/sessions/{plant['session'].code}/terminate/", {"reason": "x"})
    assert response.status_code == 302 and "/login/step-up/" in response["Location"]
    assert not AuditEvent.objects.filter(action="session.terminated").exists()


def test_terminate_is_post_only(verified_client: Any, plant: dict[str, Any]) -> None:
    response = verified_client(plant["olga"]).get(f"/sessions/{plant['session'].code}/terminate/")
    assert response.status_code == 405


def test_the_signals_list_shows_the_approvers_zones_only(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    text = verified_client(plant["olga"]).get("/sessions/signals/").content.decode()
    assert "Scan::Port_Scan" in text and "alice@plc-7" in text
    assert "other-zone-thing" not in text


def test_pages_need_a_verified_login(client: Any, plant: dict[str, Any]) -> None:
    assert client.get("/sessions/live/").status_code == 302
