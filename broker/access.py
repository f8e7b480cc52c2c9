"""The one decision function (the PDP).

Every door — portal views, the SSH gateway, the websocket consumers and the
periodic sweep — asks `authorize()` and nothing else whether a user may reach
a device now. It takes explicit arguments, reads no ambient state, and either
returns a Decision (the Grant that allows the connection plus the obligations
a door must meet before opening it) or raises AccessDenied with a machine
reason code and a sentence a vendor can act on. Doors read obligations from
the Decision instead of deciding them, so a rule changes here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from broker.models import Device, Grant, Lock, TOTPDevice, User


class Reason:
    USER_INACTIVE = "user_inactive"
    NOT_VENDOR = "not_vendor"
    CONTRACT_ENDED = "contract_ended"
    NO_TOTP = "no_totp"
    SOURCE_ADDRESS = "source_address"
    LOCKED = "locked"
    DEVICE_INACTIVE = "device_inactive"
    PROTOCOL = "protocol"
    NO_GRANT = "no_grant"
    NOT_YET = "not_yet"
    EXPIRED = "expired"
    REVOKED = "revoked"


class AccessDenied(Exception):
    """Raised by authorize(). `reason` is a Reason code; str() is the human
    sentence, safe to show the vendor (it never names a secret)."""

    def __init__(self, reason: str, message: str, *, lock: Lock | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.lock = lock


@dataclass(frozen=True)
class Decision:
    """An allowed connection: the deciding grant and what the door owes first."""

    grant: Grant
    # The zone asks for a fresh one-time code for every connection.
    connection_code_required: bool


def local_time(device: Device, when: datetime, ref: datetime | None = None) -> str:
    """A time as the plant reads it: '14:00 CET' on the same local day as
    `ref` (the moment being decided about), else '24 Nov 14:00 CET'."""
    tz = device.zone.tzinfo
    local = when.astimezone(tz)
    if ref is not None and local.date() == ref.astimezone(tz).date():
        return local.strftime("%H:%M %Z")
    return local.strftime("%d %b %H:%M %Z")


def _check_person(user: User, at: datetime, source_ip: str | None) -> None:
    if not user.is_active:
        raise AccessDenied(Reason.USER_INACTIVE, "your account is disabled")
    if user.vendor_id is None:
        raise AccessDenied(Reason.NOT_VENDOR, "only vendor accounts connect to devices")
    vendor = user.vendor
    if not vendor.is_contract_valid(at):
        raise AccessDenied(Reason.CONTRACT_ENDED, f"the contract of {vendor.name} has ended")
    if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise AccessDenied(Reason.NO_TOTP, "you have not enrolled an authenticator (TOTP) yet")
    if not vendor.allows_address(source_ip):
        raise AccessDenied(
            Reason.SOURCE_ADDRESS,
            f"connections from {source_ip or 'an unknown address'} are not allowed for {vendor.name}",
        )


def _check_locks(user: User, device: Device, grants: list[Grant], at: datetime) -> None:
    q = Q(user=user) | Q(device=device) | Q(vendor_id=user.vendor_id) | Q(grant__in=grants)
    lock = Lock.objects.active(at).filter(q).select_related("user", "device", "vendor").first()
    if lock is not None:
        until = f" until {local_time(device, lock.expires_at, at)}" if lock.expires_at else ""
        raise AccessDenied(
            Reason.LOCKED,
            f"access is locked ({lock.target_label}){until}: {lock.reason}",
            lock=lock,
        )


def _choose_grant(user: User, device: Device, protocol: str, at: datetime) -> Grant:
    candidates = list(Grant.objects.filter(user=user, device=device).order_by("starts_at"))
    usable = [g for g in candidates if g.covers(at, protocol)]
    if usable:
        # The one that lasts longest wins when windows overlap.
        return max(usable, key=lambda g: g.ends_at)
    covering = [g for g in candidates if g.covers(at)]
    if covering:
        raise AccessDenied(
            Reason.PROTOCOL, f"your access to {device.slug} does not include {protocol.upper()}"
        )
    upcoming = [g for g in candidates if g.revoked_at is None and g.starts_at > at]
    if upcoming:
        first = min(upcoming, key=lambda g: g.starts_at)
        raise AccessDenied(
            Reason.NOT_YET,
            f"no approved access to {device.slug} now; your next window starts "
            f"{local_time(device, first.starts_at, at)}",
        )
    # The refusal speaks of the newest grant that no longer lets them in — an
    # older grant revoked earlier is not why a newer, just-expired one fails.
    past = [g for g in candidates if g.ends_at <= at or (g.revoked_at and g.starts_at <= at)]
    if past:
        last = max(past, key=lambda g: (g.starts_at, g.pk))
        if last.revoked_at and last.ends_at > at:
            why = f": {last.revoke_reason}" if last.revoke_reason else ""
            raise AccessDenied(Reason.REVOKED, f"your access to {device.slug} was revoked{why}")
        raise AccessDenied(
            Reason.EXPIRED,
            f"your access to {device.slug} ended at {local_time(device, last.ends_at, at)}",
        )
    raise AccessDenied(Reason.NO_GRANT, f"you have no approved access to {device.slug}")


def authorize(
    user: User, device: Device, *, protocol: str, at: datetime, source_ip: str | None
) -> Decision:
    """Return the Decision (grant + obligations) that lets `user` reach
    `device` over `protocol` at `at` from `source_ip`, or raise AccessDenied.
    Re-evaluated while a session runs (grant end, new locks), not only at
    connect."""
    _check_person(user, at, source_ip)
    grants = list(Grant.objects.filter(user=user, device=device, starts_at__lte=at, ends_at__gt=at))
    _check_locks(user, device, grants, at)
    if not device.is_active:
        raise AccessDenied(Reason.DEVICE_INACTIVE, f"{device.slug} is out of service")
    if protocol not in device.protocols:
        raise AccessDenied(
            Reason.PROTOCOL, f"{device.slug} cannot be reached over {protocol.upper()}"
        )
    grant = _choose_grant(user, device, protocol, at)
    return Decision(grant=grant, connection_code_required=device.zone.requires_connection_otp)
