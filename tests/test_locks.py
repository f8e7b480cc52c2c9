"""Locks (after Teleport): one target, a reason, an optional expiry; while
active nothing the lock names may connect."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from broker import approvals
from broker.access import AccessDenied, Reason, authorize
from broker.models import AuditEvent, Lock
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both


def connect(plant, at=None):
    return authorize(
        plant.vera, plant.device, protocol="ssh", at=at or timezone.now(), source_ip="10.0.0.1"
    )


@pytest.mark.parametrize("target", ["vendor", "user", "device", "grant"])
def test_a_lock_on_any_target_stops_the_connection_and_lifting_restores_it(
    plant, make_grant, target
):
    grant = make_grant(plant.vera, plant.device)
    assert connect(plant).grant == grant
    names = {"vendor": plant.vendor, "user": plant.vera, "device": plant.device, "grant": grant}
    lock = approvals.create_lock(
        plant.olga, **{target: names[target]}, reason="checking", source_ip="10.9.9.9"
    )
    with pytest.raises(AccessDenied) as exc:
        connect(plant)
    assert exc.value.reason == Reason.LOCKED and exc.value.lock == lock
    assert approvals.lift_lock(plant.olga, lock)
    assert connect(plant).grant == grant
    created = AuditEvent.objects.get(action="lock.created")
    assert (
        created.actor == "olga"
        and created.source_ip == "10.9.9.9"
        and created.data["reason"] == "checking"
    )
    assert AuditEvent.objects.filter(action="lock.lifted").count() == 1


def test_a_lock_with_a_ttl_expires_by_itself(plant, make_grant):
    make_grant(plant.vera, plant.device, ends_at=timezone.now() + timedelta(hours=5))
    lock = approvals.create_lock(
        plant.olga, user=plant.vera, reason="cool off", ttl=timedelta(hours=1)
    )
    assert lock.expires_at is not None
    with pytest.raises(AccessDenied):
        connect(plant)
    assert connect(plant, at=timezone.now() + timedelta(hours=2))


def test_a_lock_on_another_device_does_not_stop_this_one(plant, make_grant, make_device):
    grant = make_grant(plant.vera, plant.device)
    approvals.create_lock(
        plant.olga, device=make_device("plc-other", zone=plant.device.zone), reason="x"
    )
    assert connect(plant).grant == grant


@pytest.mark.parametrize(
    "kw,message",
    [
        ({}, "exactly one"),
        ({"two": True}, "exactly one"),
        ({"reason": " "}, "Say why"),
        ({"ttl": timedelta(0)}, "positive"),
    ],
)
def test_a_bad_lock_is_refused_and_nothing_saved(plant, make_grant, kw, message):
    make_grant(plant.vera, plant.device)
    args = {"reason": kw.get("reason", "why")}
    if "ttl" in kw:
        args["ttl"] = kw["ttl"]
    if kw.get("two"):
        args.update(user=plant.vera, device=plant.device)
    elif kw:
        args["user"] = plant.vera
    with pytest.raises(approvals.Refused, match=message):
        approvals.create_lock(plant.olga, **args)
    assert not Lock.objects.exists()


def test_the_database_refuses_a_lock_with_two_targets(plant):
    with pytest.raises(IntegrityError), transaction.atomic():
        Lock.objects.create(user=plant.vera, device=plant.device, reason="two")


def test_lifting_twice_changes_nothing_the_second_time(plant, make_grant):
    make_grant(plant.vera, plant.device)
    lock = approvals.create_lock(plant.olga, user=plant.vera, reason="x")
    assert approvals.lift_lock(plant.olga, lock)
    assert not approvals.lift_lock(plant.sam, lock)
    lock.refresh_from_db()
    assert lock.lifted_by == plant.olga
    assert AuditEvent.objects.filter(action="lock.lifted").count() == 1


def test_approvers_see_locks_of_their_zones_vendors_see_none(
    plant, make_zone, make_device, make_group, make_approver, make_grant, make_user
):
    make_grant(plant.vera, plant.device)
    admin = make_user("root", is_staff=True)
    elsewhere = make_device("pump-1", zone=make_zone(name="Utilities"))
    mine = approvals.create_lock(plant.olga, device=plant.device, reason="mine")
    theirs = approvals.create_lock(admin, device=elsewhere, reason="theirs")
    on_vendor = approvals.create_lock(plant.olga, vendor=plant.vendor, reason="vendor")
    assert set(Lock.objects.visible_to(plant.sam)) == {mine, on_vendor}
    assert not Lock.objects.visible_to(plant.vera).exists()
    outsider = make_approver("ivan", groups=[make_group("Utilities")])
    assert theirs not in Lock.objects.visible_to(outsider)
