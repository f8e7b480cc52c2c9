"""The response policy: what Airlock does when a signal arrives.

A signal comes from a sensor (sessions/anomalies/intake.py) or a built-in
detector (sessions/anomalies/detectors.py); both end here, in `raise_signal()`: the
Signal row is stored with the sessions it touches, the zone's rule for its
severity is applied (sessions/anomalies/models.py: ResponseRule, defaults in
DEFAULT_RESPONSES), and every action that ends access goes through
`revoke()`, so the database is written before anything is published.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from broker import audit
from broker.models import Device, User
from sessions.anomalies.models import ResponseRule, Sensor, Signal, response_for
from sessions.live.revocation import revoke
from sessions.models import Session

log = logging.getLogger(__name__)
Action = ResponseRule.Action


def raise_signal(
    *,
    origin: str,
    kind: str,
    severity: str,
    detail: str,
    device: Device | None,
    sessions: Iterable[Session] = (),
    user: User | None = None,
    sensor: Sensor | None = None,
    format: str = "",
    address: str | None = None,
    raw: dict[str, Any] | None = None,
    source_ip: str | None = None,
    alert_only: bool = False,
) -> Signal:
    """Store a signal, apply the zone's response, audit both. Returns the
    Signal with `actions` saying what was done. `alert_only` stores it and
    alerts approvers but ends no access (a sensor naming a user who holds
    nothing on the device)."""
    sessions = list(sessions)
    signal = Signal.objects.create(
        origin=origin,
        sensor=sensor,
        format=format,
        kind=kind[:80],
        severity=severity,
        detail=detail[:2000],
        device=device,
        user=user,
        address=address,
        raw=raw or {},
    )
    if sessions:
        signal.sessions.set(sessions)
    zone = device.zone if device is not None else None
    actions, lock_for = response_for(zone, severity)
    if alert_only:
        actions, lock_for, sessions = [Action.ALERT], None, []
    done = respond(signal, sessions, actions, lock_for)
    signal.actions = done
    signal.save(update_fields=["actions"])
    audit.record(
        "signal.received",
        actor=signal.source_label,
        target=f"device:{device.slug}" if device else "",
        source_ip=source_ip,
        data={
            "signal": str(signal.code),
            "kind": signal.kind,
            "severity": severity,
            "sessions": [str(s.code) for s in sessions],
            "actions": done,
        },
    )
    return signal


def vendor_reason(signal: Signal) -> str:
    """What the vendor reads when a signal ends their session. The detail
    may name internal addresses or rules, so it is left out."""
    return f"a {signal.severity} security signal ({signal.kind}) was raised on {signal.device or 'the device'}"


def respond(
    signal: Signal, sessions: list[Session], actions: list[str], lock_for: timedelta | None
) -> list[str]:
    done: list[str] = []
    by = signal.source_label
    reason = vendor_reason(signal)
    until = timezone.now() + lock_for if lock_for else None
    users = _distinct([s.user for s in sessions] + ([signal.user] if signal.user else []))
    for action in actions:
        if action == Action.RECORD:
            done.append("recorded")
        elif action == Action.ALERT:
            done.append(f"alerted {alert_approvers(signal)} approver(s)")
        elif action == Action.TERMINATE:
            for session in sessions:
                revoke(session, reason=reason, by=by, data={"signal": str(signal.code)})
                done.append(f"terminated session {session.code}")
            if not sessions:
                done.append("no live session to terminate")
        elif action == Action.LOCK_USER:
            for user in users:
                revoke(user, reason=reason, by=by, until=until, data={"signal": str(signal.code)})
                done.append(f"locked user {user.username}" + _until(until))
            if not users:
                done.append("no user to lock")
        elif action == Action.LOCK_DEVICE and signal.device is not None:
            revoke(
                signal.device, reason=reason, by=by, until=until, data={"signal": str(signal.code)}
            )
            done.append(f"locked device {signal.device.slug}" + _until(until))
        elif action == Action.LOCK_VENDOR:
            vendors = _distinct([u.vendor for u in users if u.vendor_id])
            for vendor in vendors:
                revoke(vendor, reason=reason, by=by, until=until, data={"signal": str(signal.code)})
                done.append(f"locked vendor {vendor.name}" + _until(until))
            if not vendors:
                done.append("no vendor to lock")
    return done


def _until(until: Any) -> str:
    return f" until {until:%Y-%m-%d %H:%M} UTC" if until else " until lifted"


def _distinct(items: list[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for item in items:
        seen.setdefault(item.pk, item)
    return list(seen.values())


def approvers_of(device: Device) -> list[User]:
    return list(
        User.objects.filter(approver_groups__rules__zone=device.zone, is_active=True)
        .exclude(email="")
        .distinct()
    )


def alert_approvers(signal: Signal) -> int:
    """Email the approvers of the signal's zone. Returns how many."""
    if signal.device is None:
        return 0
    recipients = [u.email for u in approvers_of(signal.device)]
    if not recipients:
        return 0
    subject = f"[Airlock] {signal.severity} signal on {signal.device.slug}: {signal.kind}"
    body = (
        f"{signal.source_label} reported {signal.kind} ({signal.severity}) on "
        f"{signal.device.slug} at {signal.at:%Y-%m-%d %H:%M:%S} UTC.\n\n{signal.detail}\n\n"
        f"Sessions touched: {signal.sessions.count()}\n"
        f"Signals: {settings.PORTAL_URL}/sessions/signals/\n"
    )
    try:
        send_mail(subject, body, None, recipients)
    except Exception as exc:  # the signal and any revocation stand without the email
        log.warning("signal alert email failed: %s", type(exc).__name__)
        return 0
    return len(recipients)


def detector_signal(session_id: int, kind: str, severity: str, detail: str) -> Signal:
    """A built-in detector fired in a live session (called by the session
    core through LiveSession.signal, in a worker thread)."""
    session = Session.objects.select_related("user__vendor", "device__zone", "grant").get(
        pk=session_id
    )
    if severity not in {"low", "medium", "high", "critical"}:
        severity = "high"
    return raise_signal(
        origin=Signal.Origin.DETECTOR,
        kind=kind,
        severity=severity,
        detail=detail,
        device=session.device,
        user=session.user,
        sessions=[session] if session.ended_at is None else [],
        address=session.source_ip,
        source_ip=session.source_ip,
    )
