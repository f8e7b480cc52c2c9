"""The one decision function, table-driven: every Reason code, and the
grant that allows a connection."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from broker.access import AccessDenied, Reason, authorize
from broker.models import Lock, TOTPDevice
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=ZoneInfo("UTC"))  # 13:00 CET


def _inactive_user(p, g):
    p.vera.is_active = False
    p.vera.save()


def _approver(p, g):
    p.who = p.olga


def _contract_ended(p, g):
    p.vendor.contract_ends_at = NOW - timedelta(days=1)
    p.vendor.save()


def _no_totp(p, g):
    TOTPDevice.objects.filter(user=p.vera).delete()


def _source(p, g):
    p.vendor.allowed_cidrs = "192.0.2.0/24"
    p.vendor.save()


def _lock_user(p, g):
    Lock.objects.create(user=p.vera, reason="suspicious login")


def _lock_vendor(p, g):
    Lock.objects.create(
        vendor=p.vendor, reason="contract dispute", expires_at=NOW + timedelta(hours=2)
    )


def _lock_device(p, g):
    Lock.objects.create(device=p.device, reason="line restart")


def _lock_grant(p, g):
    Lock.objects.create(grant=g, reason="odd traffic")


def _device_inactive(p, g):
    p.device.is_active = False
    p.device.save()


def _rdp_not_on_device(p, g):
    p.protocol = "rdp"


def _rdp_not_granted(p, g):
    p.device.rdp_host = "10.0.0.9"
    p.device.save()
    p.protocol = "rdp"


def _no_grant(p, g):
    g.delete()


def _not_yet(p, g):
    g.starts_at, g.ends_at = NOW + timedelta(hours=1), NOW + timedelta(hours=3)
    g.save()


def _expired(p, g):
    g.starts_at, g.ends_at = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
    g.save()


def _revoked(p, g):
    g.revoked_at, g.revoke_reason = NOW - timedelta(minutes=1), "work done"
    g.save()


def _lifted_and_expired_locks_do_not_count(p, g):
    Lock.objects.create(user=p.vera, reason="old", lifted_at=NOW - timedelta(hours=1))
    Lock.objects.create(device=p.device, reason="old", expires_at=NOW - timedelta(minutes=1))


CASES = [
    (Reason.USER_INACTIVE, _inactive_user, "disabled"),
    (Reason.NOT_VENDOR, _approver, "only vendor accounts"),
    (Reason.CONTRACT_ENDED, _contract_ended, "contract of"),
    (Reason.NO_TOTP, _no_totp, "authenticator"),
    (Reason.SOURCE_ADDRESS, _source, "connections from 10.0.0.1 are not allowed"),
    (Reason.LOCKED, _lock_user, "locked (user vera): suspicious login"),
    (Reason.LOCKED, _lock_vendor, "until 15:00 CET: contract dispute"),
    (Reason.LOCKED, _lock_device, "locked (device plc-7)"),
    (Reason.LOCKED, _lock_grant, "odd traffic"),
    (Reason.DEVICE_INACTIVE, _device_inactive, "plc-7 is out of service"),
    (Reason.PROTOCOL, _rdp_not_on_device, "cannot be reached over RDP"),
    (Reason.PROTOCOL, _rdp_not_granted, "does not include RDP"),
    (Reason.NO_GRANT, _no_grant, "no approved access to plc-7"),
    (Reason.NOT_YET, _not_yet, "your next window starts 14:00 CET"),
    (Reason.EXPIRED, _expired, "ended at 12:00 CET"),
    (Reason.REVOKED, _revoked, "was revoked: work done"),
]


def test_every_reason_code_is_covered_by_the_table():
    codes = {v for k, v in vars(Reason).items() if k.isupper()}
    assert codes == {reason for reason, _, _ in CASES}


@pytest.mark.parametrize(
    "reason,setup,sentence", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES]
)
def test_authorize_denies_with_a_reason_code_and_a_sentence(
    plant, make_grant, reason, setup, sentence
):
    grant = make_grant(
        plant.vera,
        plant.device,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    plant.who, plant.protocol = plant.vera, "ssh"
    setup(plant, grant)
    with time_machine.travel(NOW, tick=False):
        with pytest.raises(AccessDenied) as exc:
            authorize(
                plant.who,
                plant.device,
                protocol=plant.protocol,
                at=timezone.now(),
                source_ip="10.0.0.1",
            )
    assert exc.value.reason == reason
    assert sentence in str(exc.value)


@pytest.mark.parametrize("setup", [lambda p, g: None, _lifted_and_expired_locks_do_not_count])
def test_authorize_returns_the_covering_grant(plant, make_grant, setup):
    grant = make_grant(
        plant.vera,
        plant.device,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    setup(plant, grant)
    assert (
        authorize(plant.vera, plant.device, protocol="ssh", at=NOW, source_ip="10.0.0.1").grant
        == grant
    )


def test_an_allowed_source_network_lets_the_vendor_in(plant, make_grant):
    plant.vendor.allowed_cidrs = "10.0.0.0/8\n192.0.2.0/24"
    plant.vendor.save()
    grant = make_grant(
        plant.vera,
        plant.device,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    assert (
        authorize(plant.vera, plant.device, protocol="ssh", at=NOW, source_ip="10.2.3.4").grant
        == grant
    )
    with pytest.raises(AccessDenied):
        authorize(plant.vera, plant.device, protocol="ssh", at=NOW, source_ip=None)


def test_a_grant_is_reevaluated_at_the_time_asked(plant, make_grant):
    make_grant(
        plant.vera,
        plant.device,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    authorize(plant.vera, plant.device, protocol="ssh", at=NOW, source_ip="10.0.0.1")
    with pytest.raises(AccessDenied) as exc:
        authorize(
            plant.vera,
            plant.device,
            protocol="ssh",
            at=NOW + timedelta(hours=2),
            source_ip="10.0.0.1",
        )
    assert exc.value.reason == Reason.EXPIRED


def test_a_window_on_another_day_names_the_day_in_plant_time(plant, make_grant):
    make_grant(
        plant.vera,
        plant.device,
        starts_at=NOW + timedelta(days=1),
        ends_at=NOW + timedelta(days=1, hours=2),
    )
    with pytest.raises(AccessDenied) as exc:
        authorize(plant.vera, plant.device, protocol="ssh", at=NOW, source_ip="10.0.0.1")
    assert str(exc.value).endswith("your next window starts 25 Nov 13:00 CET")
