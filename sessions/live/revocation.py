"""Revocation: the one seam between `broker` (who may reach what) and
`sessions` (what is live on the wire).

Every way access ends early goes through `revoke()`: an approver revokes a
grant, a lock is created (by a person or by the response policy), an approver
terminates one session, a vendor says "work done". The order is the
invariant:

1. write the revocation or the lock in the database (compare-and-set), so
   `authorize()` refuses anything new from this instant;
2. write the audit event;
3. publish `{"type": "session.terminate", "reason", "by"}` on the
   channel-layer group of what was revoked. Every LiveSession is subscribed
   to its session, user, vendor, device and grant groups (sessions/live/control.py),
   so whichever process holds it — an SSH gateway, a websocket consumer —
   closes both sides at once and tells the vendor why.

Publishing is a push, never a poll; the periodic sweep (sessions/live/sweep.py)
is only the safety net for a message that could not be delivered. A failed
publish is logged and audited but never undoes step 1.

`revoke()` is synchronous so views and Celery tasks call it directly; from
async code use `database_sync_to_async(revoke)`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from django.db import transaction
from django.utils import timezone

from broker import audit
from broker.models import Device, Grant, Lock, User, Vendor
from sessions.live import control
from sessions.models import Session

log = logging.getLogger(__name__)

TERMINATE = "session.terminate"

Target = Union[Grant, User, Vendor, Device, Lock, "Session"]  # noqa: F821


@dataclass
class Revocation:
    """What revoke() did. `changed` is False when the grant was already
    revoked (the terminate is still published: re-sending is harmless and
    makes a retry after a failed publish effective)."""

    changed: bool
    groups: list[str]
    lock: Lock | None = None
    published: bool = False
    audit_action: str = ""
    errors: list[str] = field(default_factory=list)


def group_for(kind: str, code: Any) -> str:
    """`airlock.<kind>.<uuid>`: kind is session, user, vendor, device or grant."""
    return f"airlock.{kind}.{code}"


def signin_group(session_key: str) -> str:
    """The group of the browser sessions opened from one portal sign-in.
    Named by a hash: a session key is a credential and never goes on the wire."""
    return "airlock.signin." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def end_portal_signin(session_key: str | None, *, by: Any = None) -> bool:
    """The person signed out of the portal: the browser terminals and remote
    desktops opened from that sign-in end too. (Native SSH sessions are not
    tied to a portal sign-in.) Nothing is written: signing out revokes no
    access. Returns whether the message was published."""
    if not session_key:
        return False
    message = {
        "type": TERMINATE,
        "reason": "you signed out of the portal",
        "by": audit.actor_label(by),
    }
    try:
        control.publish([signin_group(session_key)], message)
    except Exception as exc:  # the sign-in's absolute lifetime still ends them
        log.warning("sign-out not published to browser sessions: %s", type(exc).__name__)
        return False
    return True


def revoke(
    target: Target,
    *,
    reason: str,
    by: Any = None,
    source_ip: str | None = None,
    lock: bool = False,
    until: datetime | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Revocation:
    """Revoke `target` and end whatever of it is live.

    - a Grant: sets revoked_at (compare-and-set) — an approver's revocation
      or the vendor's own "work done". With `lock=True` a Lock on the grant
      is created instead.
    - a User, Vendor or Device: creates a Lock naming it, expiring `until`
      (None: until lifted).
    - an unsaved Lock: saves it (the caller filled in its target).
    - a Session: terminates that one session; nothing is locked, so the
      vendor may reconnect while authorize() allows it.

    `reason` is a sentence the vendor will read; `by` is a User, a label
    such as "sensor:zeek-1" or "detector:command_rule", or None (system).
    """
    at = at or timezone.now()
    reason = (reason or "").strip()[:300] or "no reason given"
    by_label = audit.actor_label(by)
    by_user = by if isinstance(by, User) else None
    extra = dict(data or {})

    with transaction.atomic():
        if isinstance(target, Session):
            result = Revocation(
                True, [group_for("session", target.code)], audit_action="session.terminated"
            )
            audit_target = f"session:{target.code}"
            extra.update(device=target.device.slug, user=target.user.username)
        elif isinstance(target, Grant) and not lock:
            changed = (
                Grant.objects.filter(pk=target.pk, revoked_at=None).update(
                    revoked_at=at, revoked_by=by_user, revoke_reason=reason
                )
                == 1
            )
            if changed:
                target.revoked_at, target.revoked_by, target.revoke_reason = at, by_user, reason
            result = Revocation(
                changed, [group_for("grant", target.code)], audit_action="grant.revoked"
            )
            audit_target = f"grant:{target.code}"
            extra.update(device=target.device.slug, user=target.user.username)
        else:
            new_lock = _build_lock(target, reason=reason, by_user=by_user, until=until, at=at)
            new_lock.full_clean(exclude=["created_by", "lifted_by"])
            new_lock.save()
            result = Revocation(
                True, [_lock_group(new_lock)], lock=new_lock, audit_action="lock.created"
            )
            audit_target = f"lock:{new_lock.code}"
            extra.update(
                on=new_lock.target_label,
                expires_at=new_lock.expires_at.isoformat() if new_lock.expires_at else None,
            )
        if result.changed:
            audit.record(
                result.audit_action,
                actor=by_label,
                target=audit_target,
                source_ip=source_ip,
                data={"reason": reason, **extra},
                at=at,
            )

    # Published after the write is committed (or at least visible to this
    # connection's transaction): a gateway that re-checks authorize() on
    # terminate must already see the revocation.
    message = {"type": TERMINATE, "reason": reason, "by": by_label}
    try:
        control.publish(result.groups, message)
        result.published = True
    except Exception as exc:  # the sweep and the gateways' fail-closed cover this
        result.errors.append(type(exc).__name__)
        log.warning(
            "revocation %s written but not published: %s", result.groups, type(exc).__name__
        )
        audit.record(
            "revocation.publish_failed",
            actor="system",
            target=", ".join(result.groups),
            data={"error": type(exc).__name__},
        )
    return result


def _build_lock(
    target: Any, *, reason: str, by_user: User | None, until: datetime | None, at: datetime
) -> Lock:
    if isinstance(target, Lock):
        if target.pk is not None:
            raise ValueError("revoke() creates locks; pass an unsaved Lock")
        target.reason = target.reason or reason
        target.created_by = target.created_by or by_user
        target.created_at = at
        if until is not None:
            target.expires_at = until
        return target
    if until is not None and until <= at:
        raise ValueError("a lock must expire in the future")
    fields: dict[str, Any] = {
        "reason": reason,
        "created_by": by_user,
        "created_at": at,
        "expires_at": until,
    }
    if isinstance(target, Grant):
        fields["grant"] = target
    elif isinstance(target, User):
        fields["user"] = target
    elif isinstance(target, Vendor):
        fields["vendor"] = target
    elif isinstance(target, Device):
        fields["device"] = target
    else:
        raise TypeError(f"cannot revoke a {type(target).__name__}")
    return Lock(**fields)


def _lock_group(lock: Lock) -> str:
    if lock.vendor_id:
        return group_for("vendor", lock.vendor.code)
    if lock.user_id:
        return group_for("user", lock.user.code)
    if lock.device_id:
        return group_for("device", lock.device.code)
    return group_for("grant", lock.grant.code)
