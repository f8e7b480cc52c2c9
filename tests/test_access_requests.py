"""A vendor user asks for one device, for one window, with a reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from broker import approvals
from broker.models import AccessRequest, AuditEvent
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both


def ask(plant, **kw):
    args = dict(protocols=["ssh"], starts_at=None, duration=timedelta(hours=2), reason="WO-4711")
    args.update(kw)
    user = args.pop("user", plant.vera)
    device = args.pop("device", plant.device)
    return approvals.submit_request(user, device, **args)


def test_a_vendor_user_can_ask_for_an_eligible_device_from_approval(plant):
    req = ask(plant)
    assert req.status == AccessRequest.Status.PENDING
    assert req.starts_at is None and req.duration == timedelta(hours=2)
    event = AuditEvent.objects.get(action="request.submitted")
    assert event.actor == "vera" and event.data["device"] == "plc-7"


def test_a_window_may_start_in_the_future(plant):
    start = timezone.now() + timedelta(days=1)
    req = ask(plant, starts_at=start)
    assert req.starts_at == start and req.latest_end() == start + timedelta(hours=2)


def test_a_window_in_the_past_is_refused_and_nothing_saved(plant):
    with pytest.raises(approvals.Refused, match="in the past"):
        ask(plant, starts_at=timezone.now() - timedelta(hours=1))
    assert not AccessRequest.objects.exists()


def test_a_window_longer_than_the_zone_allows_is_refused(plant):
    with pytest.raises(approvals.Refused, match="8 hours at most"):
        ask(plant, duration=timedelta(hours=9))
    assert not AccessRequest.objects.exists()


def test_a_zero_length_window_is_refused(plant):
    with pytest.raises(approvals.Refused, match="longer than zero"):
        ask(plant, duration=timedelta(0))


def test_a_start_too_far_ahead_is_refused(plant):
    with pytest.raises(approvals.Refused, match="90 days"):
        ask(plant, starts_at=timezone.now() + timedelta(days=120))


def test_a_reason_is_required(plant):
    with pytest.raises(approvals.Refused, match="reason"):
        ask(plant, reason="   ")
    assert not AccessRequest.objects.exists()


def test_a_protocol_the_device_does_not_speak_is_refused(plant):
    with pytest.raises(approvals.Refused, match="RDP"):
        ask(plant, protocols=["ssh", "rdp"])
    with pytest.raises(approvals.Refused, match="at least one"):
        ask(plant, protocols=[])


def test_a_device_the_vendor_is_not_eligible_for_is_refused_and_audited(plant, make_device):
    other = make_device("plc-9", zone=plant.zone)
    with pytest.raises(approvals.Refused, match="may not request"):
        ask(plant, device=other)
    assert not AccessRequest.objects.exists()
    event = AuditEvent.objects.get(action="request.refused")
    assert event.actor == "vera" and event.data["why"] == "not_eligible"


def test_an_inactive_device_cannot_be_requested(plant):
    plant.device.is_active = False
    plant.device.save()
    with pytest.raises(approvals.Refused):
        ask(plant)


def test_an_approver_cannot_request_access(plant):
    with pytest.raises(approvals.Refused, match="Only vendor accounts"):
        ask(plant, user=plant.olga)


def test_a_vendor_with_an_ended_contract_cannot_request(plant):
    plant.vendor.contract_ends_at = timezone.now() - timedelta(days=1)
    plant.vendor.save()
    with pytest.raises(approvals.Refused, match="contract"):
        ask(plant)


def test_a_zone_without_policy_cannot_take_requests(plant, make_zone, make_device):
    lonely = make_device("hmi-1", zone=make_zone(name="Lab"))
    plant.vendor.eligible_devices.add(lonely)
    with pytest.raises(approvals.Refused, match="no approval policy"):
        ask(plant, device=lonely)


def test_the_vendor_can_cancel_a_pending_request(plant):
    req = ask(plant)
    approvals.cancel_request(plant.vera, req)
    assert req.status == AccessRequest.Status.CANCELLED
    assert AuditEvent.objects.filter(action="request.cancelled").count() == 1


def test_someone_else_cannot_cancel_and_a_closed_request_stays_closed(plant, make_vendor_user):
    req = ask(plant)
    colleague = make_vendor_user("victor", vendor=plant.vendor)
    with pytest.raises(approvals.Refused, match="Only the person"):
        approvals.cancel_request(colleague, req)
    approvals.cancel_request(plant.vera, req)
    with pytest.raises(approvals.Refused, match="cancelled"):
        approvals.cancel_request(plant.vera, req)
    assert AuditEvent.objects.filter(action="request.cancelled").count() == 1


def test_a_fixed_window_that_passed_undecided_expires(plant):
    start = timezone.now() + timedelta(hours=1)
    req = ask(plant, starts_at=start)
    assert approvals.expire_pending(start + timedelta(hours=1)) == 0
    assert approvals.expire_pending(start + timedelta(hours=2)) == 1
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.EXPIRED
    assert approvals.expire_pending(start + timedelta(hours=3)) == 0
    assert AuditEvent.objects.filter(action="request.expired").count() == 1


def test_a_request_from_approval_expires_after_a_week_undecided(plant):
    req = ask(plant)
    assert approvals.expire_pending(timezone.now() + timedelta(days=6)) == 0
    assert approvals.expire_pending(timezone.now() + timedelta(days=8)) == 1
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.EXPIRED


def test_the_periodic_task_expires_requests(plant):
    from broker.tasks import expire_requests

    start = timezone.now() + timedelta(minutes=10)
    req = ask(plant, starts_at=start)
    with time_machine.travel(start + timedelta(hours=3)):
        assert expire_requests() == 1
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.EXPIRED


def test_the_window_is_described_in_the_plants_time_zone(plant):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    start = datetime(2026, 12, 1, 13, 0, tzinfo=ZoneInfo("UTC"))
    with time_machine.travel(start - timedelta(days=1)):
        req = ask(plant, starts_at=start)
    assert approvals.describe_window(req) == "01 Dec 2026 14:00 – 16:00 CET"
