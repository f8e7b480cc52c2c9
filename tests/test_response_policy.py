"""The response policy: per zone, severity → record, alert approvers,
terminate, lock the user for a while, lock the device, lock the vendor.
Every action that ends access goes through revoke()."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import mail
from django.utils import timezone

from broker.access import AccessDenied, authorize
from broker.models import Lock
from sessions.anomalies.models import DEFAULT_RESPONSES, response_for
from sessions.anomalies.response import raise_signal
from sessions.models import ResponseRule, Session, Signal
from tests.support.signing import create_sensor, post_signal


@pytest.fixture(autouse=True)
def in_memory(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def plant(
    make_vendor_user: Any,
    make_device: Any,
    make_grant: Any,
    make_group: Any,
    make_zone: Any,
    make_approver: Any,
) -> dict[str, Any]:
    ops = make_group("Plant operations")
    zone = make_zone(rules=[(ops, 1)])
    olga = make_approver("olga", groups=[ops], email="olga@plant.example")
    device = make_device("plc-7", ssh_host="10.40.1.7", zone=zone)
    alice = make_vendor_user("alice")
    grant = make_grant(alice, device, ends_at=timezone.now() + timedelta(hours=4))
    session = Session.objects.create(user=alice, device=device, grant=grant)
    return {
        "zone": zone,
        "device": device,
        "alice": alice,
        "session": session,
        "olga": olga,
        "grant": grant,
    }


def signal(plant: dict[str, Any], severity: str) -> Signal:
    return raise_signal(
        origin="sensor",
        kind="test",
        severity=severity,
        detail="d",
        device=plant["device"],
        sessions=[plant["session"]],
    )


def listen(group: str) -> tuple[Any, str]:
    layer = get_channel_layer()

    async def go() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    return layer, async_to_sync(go)()


def received(layer: Any, channel: str) -> dict[str, Any]:
    import asyncio

    async def go() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), 5)

    return async_to_sync(go)()


def test_the_defaults_escalate_with_severity() -> None:
    assert response_for(None, "low") == (["record"], None)
    assert response_for(None, "medium") == (["alert"], None)
    assert response_for(None, "high") == (["alert", "terminate", "lock_user"], timedelta(hours=1))
    assert response_for(None, "critical") == (["alert", "terminate", "lock_vendor"], None)
    assert set(DEFAULT_RESPONSES) == {"low", "medium", "high", "critical"}


def test_low_is_recorded_only(plant: dict[str, Any]) -> None:
    s = signal(plant, "low")
    assert s.actions == ["recorded"]
    assert not Lock.objects.exists() and not mail.outbox


def test_medium_emails_the_zones_approvers(plant: dict[str, Any]) -> None:
    s = signal(plant, "medium")
    assert s.actions == ["alerted 1 approver(s)"]
    assert mail.outbox[0].to == ["olga@plant.example"]
    assert "plc-7" in mail.outbox[0].subject
    assert not Lock.objects.exists()


def test_high_terminates_the_session_and_locks_the_user_for_an_hour(plant: dict[str, Any]) -> None:
    layer, channel = listen(f"airlock.session.{plant['session'].code}")
    # A stopped clock, so the hour is asserted exactly rather than within a margin.
    with time_machine.travel(timezone.now(), tick=False):
        s = signal(plant, "high")
        now = timezone.now()

    lock = Lock.objects.get()
    assert lock.user == plant["alice"]
    assert lock.expires_at == now + timedelta(hours=1)
    assert f"terminated session {plant['session'].code}" in s.actions
    message = received(layer, channel)
    assert message["type"] == "session.terminate" and "high security signal" in message["reason"]
    with pytest.raises(AccessDenied):
        authorize(
            plant["alice"], plant["device"], protocol="ssh", at=timezone.now(), source_ip=None
        )


def test_the_hour_long_user_lock_lapses(plant: dict[str, Any]) -> None:
    signal(plant, "high")
    later = timezone.now() + timedelta(hours=1, minutes=1)
    with time_machine.travel(later):
        assert (
            authorize(
                plant["alice"], plant["device"], protocol="ssh", at=timezone.now(), source_ip=None
            ).grant
            == plant["grant"]
        )


def test_critical_locks_the_whole_vendor_until_lifted(plant: dict[str, Any]) -> None:
    layer, channel = listen(f"airlock.vendor.{plant['alice'].vendor.code}")
    signal(plant, "critical")
    lock = Lock.objects.get()
    assert lock.vendor == plant["alice"].vendor and lock.expires_at is None
    assert received(layer, channel)["type"] == "session.terminate"


def test_a_zone_rule_overrides_the_default(plant: dict[str, Any]) -> None:
    ResponseRule.objects.create(
        zone=plant["zone"], severity="high", actions=["lock_device"], lock_minutes=30
    )
    s = signal(plant, "high")
    lock = Lock.objects.get()
    assert lock.device == plant["device"]
    assert s.actions[0].startswith("locked device plc-7")
    assert not mail.outbox


def test_a_zone_rule_can_make_high_record_only(plant: dict[str, Any]) -> None:
    ResponseRule.objects.create(zone=plant["zone"], severity="high", actions=["record"])
    assert signal(plant, "high").actions == ["recorded"]
    assert not Lock.objects.exists()


def test_an_unknown_action_is_a_validation_error(plant: dict[str, Any]) -> None:
    from django.core.exceptions import ValidationError

    rule = ResponseRule(zone=plant["zone"], severity="low", actions=["explode"])
    with pytest.raises(ValidationError):
        rule.full_clean()


def test_a_signed_high_signal_ends_access_through_the_endpoint(
    client: Any, plant: dict[str, Any]
) -> None:
    _, secret = create_sensor("ot-monitor")
    body = json.dumps(
        {
            "device": "10.40.1.7",
            "severity": "high",
            "kind": "program-download",
            "detail": "download outside change window",
        }
    )
    response = post_signal(client, "ot-monitor", secret, body)
    assert response.status_code == 202
    assert response.json()["signals"][0]["sessions"] == 1
    assert Lock.objects.filter(user=plant["alice"]).exists()


def test_the_zone_page_shows_the_policy_with_defaults(
    verified_client: Any, plant: dict[str, Any]
) -> None:
    ResponseRule.objects.create(
        zone=plant["zone"], severity="medium", actions=["lock_device"], lock_minutes=15
    )
    page = verified_client(plant["olga"]).get(f"/sessions/zones/{plant['zone'].code}/policy/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Lock the device" in text and "15 minutes" in text
    assert "Terminate the session, Lock the user" in text  # high, the default
    assert "firmware flash tool" in text
