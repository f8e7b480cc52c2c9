"""Quorum approvals: every rule of the zone's policy must be met, a person
counts once and never for their own request, any deny ends it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from broker import approvals
from broker.models import AccessRequest, Approval, AuditEvent, Grant
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both


def ask(plant, **kw):
    args = dict(
        protocols=["ssh"],
        starts_at=None,
        duration=timedelta(hours=2),
        reason="WO-4711",
        wants_upload=True,
        wants_download=True,
    )
    args.update(kw)
    return approvals.submit_request(plant.vera, plant.device, **args)


def test_one_group_approving_leaves_the_request_pending_with_progress(plant):
    req = ask(plant)
    approvals.decide(plant.olga, req, approve=True)
    assert req.status == AccessRequest.Status.PENDING
    assert not Grant.objects.exists()
    assert approvals.quorum_progress(req).summary == "1 of 2: OT security pending"


def test_both_groups_approving_creates_exactly_one_grant(plant):
    req = ask(plant)
    assert approvals.quorum_progress(req).summary == "0 of 2: OT security, Plant operations pending"
    approvals.decide(plant.olga, req, approve=True)
    approvals.decide(plant.sam, req, approve=True)
    assert req.status == AccessRequest.Status.APPROVED
    grant = Grant.objects.get()
    assert grant.request == req and grant.user == plant.vera and grant.device == plant.device
    assert grant.protocols == ["ssh"]
    assert grant.ends_at - grant.starts_at == timedelta(hours=2)
    assert grant.allow_upload and grant.allow_download
    assert approvals.quorum_progress(req).summary == "2 of 2: policy met"
    assert AuditEvent.objects.filter(action="grant.created", target=f"grant:{grant.code}").exists()


def test_a_person_in_both_groups_counts_once(plant):
    plant.sec.members.add(plant.olga)
    req = ask(plant)
    approvals.decide(plant.olga, req, approve=True)
    assert req.status == AccessRequest.Status.PENDING
    with pytest.raises(approvals.Refused, match="counts once"):
        approvals.decide(plant.olga, req, approve=True)
    assert Approval.objects.filter(request=req).count() == 1
    assert AuditEvent.objects.filter(action="approval.refused", data__why="decided_twice").exists()


def test_two_approvals_from_the_same_group_do_not_meet_an_and_policy(plant, make_approver):
    other_ops = make_approver("otto", groups=[plant.ops])
    req = ask(plant)
    approvals.decide(plant.olga, req, approve=True)
    approvals.decide(other_ops, req, approve=True)
    assert req.status == AccessRequest.Status.PENDING
    assert not Grant.objects.exists()


def test_a_count_of_two_needs_two_people(plant, make_approver):
    rule = plant.zone.approval_rules.get(group=plant.ops)
    rule.count = 2
    rule.save()
    otto = make_approver("otto", groups=[plant.ops])
    req = ask(plant)
    approvals.decide(plant.sam, req, approve=True)
    approvals.decide(plant.olga, req, approve=True)
    assert approvals.quorum_progress(req).summary == "1 of 2: Plant operations (1 of 2) pending"
    approvals.decide(otto, req, approve=True)
    assert req.status == AccessRequest.Status.APPROVED


def test_any_deny_ends_the_request(plant):
    req = ask(plant)
    approvals.decide(plant.olga, req, approve=True)
    approvals.decide(plant.sam, req, approve=False, note="not during the line's restart")
    assert req.status == AccessRequest.Status.DENIED
    assert not Grant.objects.exists()
    assert AuditEvent.objects.filter(action="request.denied").exists()


def test_nobody_decides_their_own_request(plant, make_vendor_user):
    plant.ops.members.add(plant.vera)  # a vendor user who is also an approver
    req = ask(plant)
    with pytest.raises(approvals.Refused, match="your own request"):
        approvals.decide(plant.vera, req, approve=True)
    assert not Approval.objects.exists()
    assert AuditEvent.objects.filter(action="approval.refused", data__why="own_request").exists()


def test_an_approver_of_another_zone_cannot_decide(plant, make_group, make_approver):
    outsider = make_approver("ivan", groups=[make_group("Utilities")])
    req = ask(plant)
    with pytest.raises(approvals.Refused, match="not an approver"):
        approvals.decide(outsider, req, approve=True)
    assert not Approval.objects.exists()


@pytest.mark.parametrize("close", ["cancel", "deny", "expire"])
def test_a_closed_request_cannot_be_decided(plant, close, make_approver):
    req = ask(plant, starts_at=timezone.now() + timedelta(minutes=5), duration=timedelta(hours=1))
    if close == "cancel":
        approvals.cancel_request(plant.vera, req)
    elif close == "deny":
        approvals.decide(plant.olga, req, approve=False, note="no")
    else:
        approvals.expire_pending(timezone.now() + timedelta(hours=2))
    req.refresh_from_db()
    before = Approval.objects.count()
    with pytest.raises(approvals.Refused, match="already"):
        approvals.decide(plant.sam, req, approve=True)
    assert Approval.objects.count() == before
    assert not Grant.objects.exists()
    assert AuditEvent.objects.filter(action="approval.refused", actor="sam").exists()


def test_deciding_after_the_window_passed_expires_the_request(plant):
    start = timezone.now() + timedelta(minutes=5)
    req = ask(plant, starts_at=start, duration=timedelta(hours=1))
    with pytest.raises(approvals.Refused, match="expired"):
        approvals.decide(plant.olga, req, approve=True, at=start + timedelta(hours=2))
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.EXPIRED
    assert not Approval.objects.exists()


def test_an_approver_may_shorten_the_window_and_turn_off_file_transfer(plant):
    start = timezone.now() + timedelta(hours=1)
    req = ask(plant, starts_at=start, duration=timedelta(hours=4))
    approvals.decide(
        plant.olga,
        req,
        approve=True,
        ends_at=start + timedelta(hours=3),
        allow_upload=False,
        note="no uploads on the line",
    )
    approvals.decide(plant.sam, req, approve=True, ends_at=start + timedelta(hours=2))
    grant = Grant.objects.get()
    assert grant.starts_at == start
    assert grant.ends_at == start + timedelta(hours=2)
    assert not grant.allow_upload and grant.allow_download


def test_a_shortened_end_outside_the_window_is_refused(plant):
    start = timezone.now() + timedelta(hours=1)
    req = ask(plant, starts_at=start, duration=timedelta(hours=2))
    for bad in (start - timedelta(minutes=1), start + timedelta(hours=3)):
        with pytest.raises(approvals.Refused, match="inside the window"):
            approvals.decide(plant.olga, req, approve=True, ends_at=bad)
    assert not Approval.objects.exists()


def test_file_transfer_is_never_granted_when_not_asked(plant):
    req = ask(plant, wants_upload=False, wants_download=False)
    approvals.decide(plant.olga, req, approve=True)
    approvals.decide(plant.sam, req, approve=True)
    grant = Grant.objects.get()
    assert not grant.allow_upload and not grant.allow_download


def test_a_window_from_approval_starts_when_the_policy_is_met(plant):
    req = ask(plant, duration=timedelta(hours=1))
    approvals.decide(plant.olga, req, approve=True)
    met_at = timezone.now() + timedelta(minutes=30)
    approvals.decide(plant.sam, req, approve=True, at=met_at)
    grant = Grant.objects.get()
    assert grant.starts_at == met_at and grant.ends_at == met_at + timedelta(hours=1)


def test_the_vendor_can_end_a_grant_early(plant):
    req = ask(plant)
    approvals.decide(plant.olga, req, approve=True)
    approvals.decide(plant.sam, req, approve=True)
    grant = Grant.objects.get()
    assert approvals.end_grant_early(plant.vera, grant)
    assert grant.revoked_at is not None and grant.revoked_by == plant.vera
    assert "work done" in grant.revoke_reason
    event = AuditEvent.objects.get(action="grant.revoked")
    assert event.actor == "vera" and event.data["ended_early"] is True
    with pytest.raises(approvals.Refused, match="already ended"):
        approvals.end_grant_early(plant.vera, grant)


def test_only_the_grantee_can_end_a_grant_early(plant, make_grant):
    grant = make_grant(plant.vera, plant.device)
    with pytest.raises(approvals.Refused):
        approvals.end_grant_early(plant.olga, grant)
    grant.refresh_from_db()
    assert grant.revoked_at is None


def test_revoking_twice_changes_nothing_the_second_time(plant, make_grant):
    grant = make_grant(plant.vera, plant.device)
    assert approvals.revoke_grant(plant.olga, grant, reason="odd traffic")
    first = grant.revoked_at
    assert not approvals.revoke_grant(plant.sam, grant, reason="again")
    grant.refresh_from_db()
    assert grant.revoked_at == first and grant.revoked_by == plant.olga
    assert AuditEvent.objects.filter(action="grant.revoked").count() == 1


def test_a_shortened_end_that_passed_before_the_quorum_expires_the_request(plant):
    req = ask(plant, duration=timedelta(hours=2))
    now = timezone.now()
    approvals.decide(plant.olga, req, approve=True, ends_at=now + timedelta(minutes=30), at=now)
    with pytest.raises(approvals.Refused, match="already ended"):
        approvals.decide(plant.sam, req, approve=True, at=now + timedelta(hours=1))
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.EXPIRED
    assert not Grant.objects.exists()
