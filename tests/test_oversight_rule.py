"""The one oversight rule (broker/oversight.py): vendors see their own
sessions unless they are vendor admins, approvers act only on their zones,
locks follow the zone of what they name, and vendors never approve."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from broker import approvals
from broker.access import AccessDenied, authorize
from broker.models import AccessRequest, Lock
from sessions.models import Session
from tests.support.access_fixtures import plant  # noqa: F401


@pytest.fixture
def vera_session(plant, make_grant):
    grant = make_grant(plant.vera, plant.device)
    return Session.objects.create(user=plant.vera, device=plant.device, grant=grant)


@pytest.mark.parametrize("page", ["session-detail", "session-recording", "session-evidence"])
def test_a_vendor_cannot_open_a_colleagues_session_recording_or_evidence(
    plant, vera_session, make_vendor_user, verified_client, page
):
    colleague = make_vendor_user("carl", vendor=plant.vendor)
    client = verified_client(colleague)
    assert client.get(reverse(page, args=[vera_session.code])).status_code == 404
    assert not Session.objects.visible_to(colleague).exists()


def test_a_vendor_admin_sees_the_companys_sessions(
    plant, vera_session, make_vendor_user, verified_client
):
    boss = make_vendor_user("bea", vendor=plant.vendor, is_vendor_admin=True)
    client = verified_client(boss)
    assert client.get(reverse("session-detail", args=[vera_session.code])).status_code == 200
    assert list(Session.objects.visible_to(boss)) == [vera_session]


def test_a_vendor_does_not_watch_a_colleagues_live_session(
    plant, vera_session, make_vendor_user, verified_client
):
    colleague = make_vendor_user("carl", vendor=plant.vendor, is_vendor_admin=True)
    client = verified_client(colleague)
    assert client.get(reverse("session-watch", args=[vera_session.code])).status_code == 404


def test_an_approver_of_another_zone_cannot_lock_this_zones_device_or_an_idle_user(
    plant, make_zone, make_group, make_approver
):
    outsider = make_approver("ivan", groups=[make_group("Utilities")])
    make_zone(name="Utilities", rules=[(outsider.approver_groups.get(), 1)])
    with pytest.raises(approvals.Refused, match="only devices of your zones"):
        approvals.create_lock(outsider, device=plant.device, reason="x")
    with pytest.raises(approvals.Refused, match="only devices of your zones"):
        approvals.create_lock(plant.olga, user=plant.vera, reason="no grants here yet")
    with pytest.raises(approvals.Refused, match="only devices of your zones"):
        approvals.create_lock(plant.olga, vendor=plant.vendor, reason="no grants here yet")
    assert not Lock.objects.exists()


def test_an_approver_locks_a_user_and_vendor_with_grants_in_the_zone(plant, make_grant):
    make_grant(plant.vera, plant.device)
    assert approvals.create_lock(plant.olga, user=plant.vera, reason="x")
    assert approvals.create_lock(plant.olga, vendor=plant.vendor, reason="x")


def test_an_approver_of_another_zone_cannot_lift_a_lock_here(
    plant, make_group, make_approver, make_zone, verified_client
):
    lock = approvals.create_lock(plant.olga, device=plant.device, reason="x")
    group = make_group("Utilities")
    make_zone(name="Utilities", rules=[(group, 1)])
    outsider = make_approver("ivan", groups=[group])
    with pytest.raises(approvals.Refused):
        approvals.lift_lock(outsider, lock)
    client = verified_client(outsider)
    assert client.post(reverse("lock-lift", args=[lock.code])).status_code == 404
    lock.refresh_from_db()
    assert lock.lifted_at is None


def test_a_zone_policy_page_is_for_that_zones_approvers(
    plant, make_group, make_approver, make_zone, verified_client
):
    group = make_group("Utilities")
    make_zone(name="Utilities", rules=[(group, 1)])
    outsider = make_approver("ivan", groups=[group])
    url = reverse("zone-policy", args=[plant.zone.code])
    assert verified_client(outsider).get(url).status_code == 404
    assert verified_client(plant.olga).get(url).status_code == 200


def test_a_vendor_user_cannot_also_be_an_approver(plant):
    plant.vera.approver_groups.add(plant.ops)
    with pytest.raises(ValidationError, match="cannot also be an approver"):
        plant.vera.full_clean()


def test_a_vendor_user_who_is_in_an_approver_group_cannot_approve(plant, make_vendor_user):
    colleague = make_vendor_user("carl", vendor=plant.vendor)
    colleague.approver_groups.add(plant.ops)
    req = approvals.submit_request(
        plant.vera,
        plant.device,
        protocols=["ssh"],
        starts_at=None,
        reason="fix",
        duration=timedelta(hours=1),
    )
    with pytest.raises(approvals.Refused, match="vendor user cannot approve"):
        approvals.decide(colleague, req, approve=True)
    assert not req.approvals.exists()
    assert AccessRequest.objects.get(pk=req.pk).status == AccessRequest.Status.PENDING


def test_authorize_says_when_the_zone_asks_for_a_code_per_connection(plant, make_grant):
    make_grant(plant.vera, plant.device)
    at = timezone.now()
    assert not authorize(
        plant.vera, plant.device, protocol="ssh", at=at, source_ip=None
    ).connection_code_required
    plant.zone.requires_connection_otp = True
    plant.zone.save()
    plant.device.refresh_from_db()
    assert authorize(
        plant.vera, plant.device, protocol="ssh", at=at, source_ip=None
    ).connection_code_required


def test_a_refusal_names_the_newest_grant_not_an_older_revoked_one(plant, make_grant):
    now = timezone.now()
    make_grant(
        plant.vera,
        plant.device,
        starts_at=now - timedelta(hours=2),
        ends_at=now + timedelta(hours=2),
        revoked_at=now - timedelta(hours=1),
        revoke_reason="work done",
    )
    short = make_grant(
        plant.vera,
        plant.device,
        starts_at=now - timedelta(minutes=40),
        ends_at=now - timedelta(minutes=4),
    )
    with pytest.raises(AccessDenied) as denied:
        authorize(plant.vera, plant.device, protocol="ssh", at=now, source_ip=None)
    assert denied.value.reason == "expired"
    assert "work done" not in str(denied.value)
    ended = short.ends_at.astimezone(plant.zone.tzinfo).strftime("%H:%M")
    assert f"ended at {ended}" in str(denied.value)
