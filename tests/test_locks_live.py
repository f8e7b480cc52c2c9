"""Locks and revocations reach live sessions: a lock with a TTL blocks new
connections and ends live ones, then lapses; an approver's grant revocation
and a vendor's "work done" end the session with the reason shown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from broker import approvals
from broker.access import AccessDenied, authorize
from sessions.models import Session
from tests.support.livecontrol import Harness


@pytest.fixture
def world(
    make_vendor_user: Any,
    make_vendor: Any,
    make_device: Any,
    make_grant: Any,
    make_approver: Any,
    make_group: Any,
    make_zone: Any,
    settings: Any,
    transactional_db: Any,
) -> dict[str, Any]:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    acme = make_vendor("Acme Automation")
    # Olga approves the zone of both devices: locks follow the approver's zones.
    ops = make_group("Plant operations")
    zone = make_zone(rules=[(ops, 1)])
    plc, hmi = make_device("plc-7", zone=zone), make_device("hmi-2", zone=zone)
    alice = make_vendor_user("alice", vendor=acme)
    bert = make_vendor_user("bert", vendor=acme)
    later = timezone.now() + timedelta(hours=6)
    return {
        "acme": acme,
        "plc": plc,
        "hmi": hmi,
        "alice": alice,
        "bert": bert,
        "olga": make_approver("olga", groups=[ops]),
        "alice_plc": make_grant(alice, plc, ends_at=later),
        "alice_hmi": make_grant(alice, hmi, ends_at=later),
        "bert_plc": make_grant(bert, plc, ends_at=later),
    }


def allowed(user: Any, device: Any, at: Any = None) -> bool:
    try:
        authorize(user, device, protocol="ssh", at=at or timezone.now(), source_ip=None)
        return True
    except AccessDenied:
        return False


def test_a_user_lock_with_ttl_ends_live_sessions_blocks_new_ones_then_lapses(
    world: dict[str, Any],
) -> None:
    w = world
    with Harness() as h:
        on_plc = h.open(w["alice"], w["plc"], w["alice_plc"], install=False)
        on_hmi = h.open(w["alice"], w["hmi"], w["alice_hmi"], install=False)
        berts = h.open(w["bert"], w["plc"], w["bert_plc"], install=False)

        lock = approvals.create_lock(
            w["olga"], user=w["alice"], reason="badge not returned", ttl=timedelta(minutes=30)
        )

        assert h.wait_ended(on_plc) == "badge not returned"
        assert h.wait_ended(on_hmi) == "badge not returned"
        assert any("by olga" in m for m in on_plc.closed_with)
        assert not berts.ended  # the lock names alice only
        assert not allowed(w["alice"], w["plc"])
        assert allowed(w["bert"], w["plc"])
    assert Session.objects.get(code=on_plc.code).end_reason == "badge not returned"
    with time_machine.travel(lock.expires_at + timedelta(seconds=1)):
        assert allowed(w["alice"], w["plc"])


def test_a_device_lock_ends_every_session_on_that_device_only(world: dict[str, Any]) -> None:
    w = world
    with Harness() as h:
        alice_plc = h.open(w["alice"], w["plc"], w["alice_plc"], install=False)
        bert_plc = h.open(w["bert"], w["plc"], w["bert_plc"], install=False)
        alice_hmi = h.open(w["alice"], w["hmi"], w["alice_hmi"], install=False)

        approvals.create_lock(w["olga"], device=w["plc"], reason="PLC under investigation")

        h.wait_ended(alice_plc)
        h.wait_ended(bert_plc)
        assert not alice_hmi.ended
    assert not allowed(w["bert"], w["plc"]) and allowed(w["alice"], w["hmi"])


def test_a_vendor_lock_ends_every_session_of_the_vendors_people(world: dict[str, Any]) -> None:
    w = world
    with Harness() as h:
        sessions = [
            h.open(w["alice"], w["plc"], w["alice_plc"], install=False),
            h.open(w["bert"], w["plc"], w["bert_plc"], install=False),
        ]
        approvals.create_lock(w["olga"], vendor=w["acme"], reason="contract suspended")
        assert [h.wait_ended(s) for s in sessions] == ["contract suspended"] * 2
    assert not allowed(w["alice"], w["hmi"])


def test_a_grant_revoked_by_an_approver_ends_only_its_session(world: dict[str, Any]) -> None:
    w = world
    with Harness() as h:
        revoked = h.open(w["alice"], w["plc"], w["alice_plc"], install=False)
        other = h.open(w["alice"], w["hmi"], w["alice_hmi"], install=False)

        assert approvals.revoke_grant(w["olga"], w["alice_plc"], reason="wrong work order")

        assert h.wait_ended(revoked) == "wrong work order"
        assert not other.ended
    assert not allowed(w["alice"], w["plc"])


def test_the_vendors_work_done_ends_the_session(world: dict[str, Any]) -> None:
    w = world
    with Harness() as h:
        live = h.open(w["alice"], w["plc"], w["alice_plc"], install=False)
        approvals.end_grant_early(w["alice"], w["alice_plc"])
        assert "work done" in h.wait_ended(live)


def test_a_lifted_lock_lets_the_user_back_in(world: dict[str, Any]) -> None:
    w = world
    lock = approvals.create_lock(w["olga"], user=w["alice"], reason="check")
    assert not allowed(w["alice"], w["plc"])
    approvals.lift_lock(w["olga"], lock)
    assert allowed(w["alice"], w["plc"])


def test_a_lock_written_between_the_decision_and_the_subscription_still_ends_the_session(
    world: dict[str, Any],
) -> None:
    from broker.models import Lock
    from sessions.live.control import watch
    from sessions.live.core import LiveSession

    w = world
    with Harness() as h:

        async def open_unwatched() -> Any:
            return await LiveSession.open(
                user=w["alice"],
                device=w["plc"],
                grant=w["alice_plc"],
                source_ip="192.0.2.10",
                client_kind="native",
            )

        live = h.run(open_unwatched())
        # The lock's terminate was published while nobody listened yet.
        Lock.objects.create(user=w["alice"], reason="locked in the gap")

        assert h.run(watch(h.control, live)) is False
        assert "locked in the gap" in h.wait_ended(live)
