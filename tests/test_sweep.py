"""The sweep: the safety net behind revoke(). It ends live sessions that
authorize() now refuses, closes rows nobody heartbeats any more, and is
idempotent. Its Celery task runs every 30 s by default."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from broker.models import AuditEvent, Grant, Lock
from sessions.live import control, sweep
from sessions.models import Session
from sessions.tasks import sweep_sessions
from tests.support.livecontrol import Harness


@pytest.fixture
def world(
    make_vendor_user: Any, make_device: Any, make_grant: Any, settings: Any, transactional_db: Any
) -> dict[str, Any]:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    device = make_device("plc-7")
    alice = make_vendor_user("alice")
    grant = make_grant(alice, device, ends_at=timezone.now() + timedelta(hours=2))
    return {"device": device, "alice": alice, "grant": grant}


def test_the_sweep_is_scheduled_every_30_seconds() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["sweep-sessions"]
    assert entry["task"] == "sessions.tasks.sweep_sessions"
    assert entry["schedule"] == 30.0


def test_a_session_whose_revocation_was_never_pushed_is_ended_by_the_sweep(
    world: dict[str, Any],
) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        # Revoked behind revoke()'s back: no terminate was published.
        Grant.objects.filter(pk=world["grant"].pk).update(
            revoked_at=timezone.now(), revoke_reason="contract dispute"
        )

        result = sweep.run(timezone.now())

        assert result.terminated == [live.code]
        assert h.wait_ended(live) == "your access to plc-7 was revoked: contract dispute"
        assert any("by sweep" in m for m in live.closed_with)


def test_a_lock_written_without_a_push_is_enforced_by_the_sweep(world: dict[str, Any]) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        Lock.objects.create(device=world["device"], reason="maintenance freeze")
        sweep.run(timezone.now())
        assert "maintenance freeze" in h.wait_ended(live)


def test_a_session_authorize_still_allows_is_left_alone(world: dict[str, Any]) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        assert sweep.run(timezone.now()).terminated == []
        assert not live.ended


def test_rows_nobody_heartbeats_are_closed_and_heartbeating_ones_are_not(
    world: dict[str, Any], settings: Any
) -> None:
    settings.AIRLOCK_GATEWAY_DEAD_SECONDS = 5
    with Harness(heartbeat_seconds=0.2) as h:
        held = h.open(world["alice"], world["device"], world["grant"], install=False)
        # A row left behind by a gateway that was killed: nobody beat for it
        # for longer than the dead-after; the harness beats for the held one.
        orphan = Session.objects.create(
            user=world["alice"],
            device=world["device"],
            grant=world["grant"],
            gateway_id="gw-killed",
            last_seen_at=timezone.now() - timedelta(seconds=60),
        )
        start = Session.objects.get(code=held.code).last_seen_at
        assert h.settle(lambda: Session.objects.get(code=held.code).last_seen_at != start), (
            "the harness never beat for the held session"
        )

        result = sweep.run(timezone.now())

        assert result.closed_stale == [str(orphan.code)]
        orphan.refresh_from_db()
        assert orphan.ended_at is not None and orphan.end_reason == sweep.STALE_REASON
        assert not held.ended
        assert Session.objects.get(code=held.code).ended_at is None
    assert AuditEvent.objects.filter(action="session.end", actor="sweep").count() == 1


def test_a_heartbeat_records_the_gateway_and_byte_counts(world: dict[str, Any]) -> None:
    row = Session.objects.create(user=world["alice"], device=world["device"], grant=world["grant"])
    control.beat("gw-1", [(row.pk, 1200, 34000)])
    row.refresh_from_db()
    assert (row.gateway_id, row.bytes_in, row.bytes_out) == ("gw-1", 1200, 34000)
    assert row.last_seen_at is not None


def test_one_heartbeat_updates_many_sessions_and_leaves_ended_ones_alone(
    world: dict[str, Any],
) -> None:
    make = lambda **kw: Session.objects.create(  # noqa: E731
        user=world["alice"], device=world["device"], grant=world["grant"], **kw
    )
    counted, uncounted, ended = make(), make(bytes_in=7, bytes_out=9), make(ended_at=timezone.now())
    control.beat("gw-2", [(counted.pk, 10, 20), (uncounted.pk, None, None), (ended.pk, 99, 99)])
    for row in (counted, uncounted, ended):
        row.refresh_from_db()
    assert (counted.gateway_id, counted.bytes_in, counted.bytes_out) == ("gw-2", 10, 20)
    assert (uncounted.gateway_id, uncounted.bytes_in, uncounted.bytes_out) == ("gw-2", 7, 9)
    assert (ended.bytes_in, ended.bytes_out) == (0, 0) and ended.gateway_id != "gw-2"


def test_the_sweep_is_idempotent_and_the_task_reports_counts(world: dict[str, Any]) -> None:
    Session.objects.create(
        user=world["alice"],
        device=world["device"],
        grant=world["grant"],
        last_seen_at=timezone.now() - timedelta(minutes=5),
    )
    assert sweep_sessions() == {"terminated": 0, "closed_stale": 1, "receipts_pruned": 0}
    assert sweep_sessions() == {"terminated": 0, "closed_stale": 0, "receipts_pruned": 0}


def test_a_silent_gateway_is_marked_stopped_and_revives_with_its_next_heartbeat(
    world: dict[str, Any],
) -> None:
    from sessions.models import Gateway

    Gateway.objects.create(name="gw-silent", seen_at=timezone.now() - timedelta(minutes=5))
    Gateway.objects.create(name="gw-alive")

    assert sweep.run(timezone.now()).gateways_dead == 1
    assert Gateway.objects.get(name="gw-silent").stopped_at is not None
    assert Gateway.objects.get(name="gw-alive").stopped_at is None

    control.beat("gw-silent", [])
    assert Gateway.objects.get(name="gw-silent").stopped_at is None
