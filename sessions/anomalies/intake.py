"""Signal intake: how a machine (Zeek, Suricata, an OT monitor, a script)
tells Airlock that something is wrong.

`POST /api/signals/` with four headers:

    X-Airlock-Sensor:    <sensor name>
    X-Airlock-Timestamp: <unix seconds>
    X-Airlock-Id:        <unique id, 1-128 of [A-Za-z0-9._:-]>
    X-Airlock-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<id>." + raw body)>

Checks, in this order, each refusing with nothing stored but an audit event
for what looks like an attack: the headers are present and well formed; the
sensor exists and is active; the timestamp is within MAX_SKEW of now; the
body is at most MAX_BODY bytes; the MAC matches (constant-time compare); the
id was never used by this sensor (a unique row, so two processes cannot both
accept it); the sensor's rate limit allows it. Only then is the body parsed
(sessions/anomalies/formats.py) and each record mapped to a device and the live
sessions on it, and handed to the response policy (sessions/anomalies/response.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from broker import audit
from broker.models import Device, User
from sessions.anomalies.formats import FormatError, Report, parse
from sessions.anomalies.models import Sensor, Signal, SignalReceipt
from sessions.anomalies.response import raise_signal
from sessions.models import Session

MAX_BODY = 64 * 1024
MAX_SKEW = timedelta(minutes=5)
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TS_RE = re.compile(r"^[0-9]{1,12}$")


class Rejected(Exception):
    """The request is refused. `status` is the HTTP status, str() the
    message for the sender; `attack` marks what gets an audit event."""

    def __init__(self, status: int, message: str, *, attack: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.attack = attack


def signature(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The X-Airlock-Signature value for a request."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{nonce}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(
    sensor_name: str, secret: str, body: bytes, *, timestamp: int, nonce: str
) -> dict[str, str]:
    """Headers a sender adds (used by `manage.py sendsignal` and tests)."""
    ts = str(int(timestamp))
    return {
        "X-Airlock-Sensor": sensor_name,
        "X-Airlock-Timestamp": ts,
        "X-Airlock-Id": nonce,
        "X-Airlock-Signature": signature(secret, ts, nonce, body),
    }


def authenticate(headers: Mapping[str, str], body: bytes, *, at: datetime) -> Sensor:
    """Return the sensor that signed this request, or raise Rejected.
    On success the request id is spent (a replay of it is refused)."""
    name = headers.get("X-Airlock-Sensor", "")
    ts = headers.get("X-Airlock-Timestamp", "")
    nonce = headers.get("X-Airlock-Id", "")
    sig = headers.get("X-Airlock-Signature", "")
    if not (name and ts and nonce and sig):
        raise Rejected(
            401,
            "missing X-Airlock-Sensor, X-Airlock-Timestamp, X-Airlock-Id or "
            "X-Airlock-Signature header",
        )
    if not TS_RE.match(ts) or not ID_RE.match(nonce) or len(name) > 63:
        raise Rejected(401, "malformed authentication headers", attack="malformed_headers")
    sensor = Sensor.objects.filter(name=name, is_active=True).first()
    if sensor is None:
        raise Rejected(401, "unknown sensor", attack="unknown_sensor")
    skew = abs(at.timestamp() - int(ts))
    if skew > MAX_SKEW.total_seconds():
        raise Rejected(
            401,
            "timestamp outside the 5 minute window (check the sensor's clock)",
            attack="stale_timestamp",
        )
    if len(body) > MAX_BODY:
        raise Rejected(413, f"body larger than {MAX_BODY} bytes")
    expected = signature(sensor.secret(), ts, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise Rejected(401, "bad signature", attack="bad_signature")
    try:
        with transaction.atomic():
            SignalReceipt.objects.create(sensor=sensor, nonce=nonce, received_at=at)
    except IntegrityError:
        raise Rejected(401, "this X-Airlock-Id was already used", attack="replayed_id") from None
    return sensor


def rejected(exc: Rejected, headers: Mapping[str, str], source_ip: str | None) -> None:
    """Audit a refused request that looks like an attack."""
    if not exc.attack:
        return
    name = headers.get("X-Airlock-Sensor", "")[:63]
    audit.record(
        "signal.rejected",
        actor=f"sensor:{name}" if name else "anonymous",
        target=f"sensor:{name}",
        source_ip=source_ip,
        data={"why": exc.attack, "id": headers.get("X-Airlock-Id", "")[:128]},
    )


@dataclass
class Match:
    device: Device
    sessions: list[Session]
    user: User | None
    address: str | None


def resolve(report: Report) -> Match:
    """The device a report is about and the live sessions it touches.
    Raises Rejected(422) for an unknown device, user or session."""
    device = None
    address = None
    for ref in report.devices:
        device = find_device(ref)
        if device is not None:
            address = ref if _is_address(ref) else None
            break
    if device is None:
        raise Rejected(422, f"no device has the slug or address {', '.join(report.devices)}")
    live = Session.objects.live().filter(device=device).select_related("user__vendor", "grant")
    user = None
    if report.user:
        user = User.objects.filter(username=report.user, vendor__isnull=False).first()
        if user is None:
            raise Rejected(422, f"no vendor user is called {report.user}")
        live = live.filter(user=user)
    if report.session:
        session = Session.objects.filter(code=report.session).first()
        # A sensor may only name a session on the device it reports about
        # (and of the user it names): a signal cannot reach across vendors.
        if (
            session is None
            or session.device_id != device.pk
            or (user and session.user_id != user.pk)
        ):
            raise Rejected(
                422,
                f"session {report.session} is not a session on {device.slug}"
                + (f" by {user.username}" if user else ""),
            )
        live = live.filter(pk=session.pk)
    return Match(device=device, sessions=list(live), user=user, address=address)


def find_device(ref: str) -> Device | None:
    if _is_address(ref):
        text = str(ipaddress.ip_address(ref))
        return (
            Device.objects.filter(Q(ssh_host=text) | Q(rdp_host=text))
            .select_related("zone")
            .order_by("pk")
            .first()
        )
    return Device.objects.filter(slug=ref).select_related("zone").first()


def _is_address(ref: str) -> bool:
    try:
        ipaddress.ip_address(ref)
        return True
    except ValueError:
        return False


def accept(sensor: Sensor, body: bytes, *, at: datetime, source_ip: str | None) -> dict[str, Any]:
    """Parse an authenticated body and raise its signals. Raises Rejected
    (400 malformed, 422 unknown device/user/session, 429 rate limited)."""
    if not sensor.take_token(at):
        raise Rejected(429, "rate limit for this sensor exceeded; retry later")
    Sensor.objects.filter(pk=sensor.pk).update(last_seen_at=at)
    try:
        reports, skipped = parse(body)
    except FormatError as exc:
        raise Rejected(400, str(exc)) from None
    matches: list[tuple[Report, Match]] = []
    unknown: list[str] = []
    for report in reports:
        try:
            matches.append((report, resolve(report)))
        except Rejected as exc:
            # A batch from Zeek or Suricata mostly concerns other hosts; a
            # generic signal names one device and must match it.
            if report.format == "generic" or len(reports) == 1:
                raise
            unknown.append(str(exc))
    if not matches:
        raise Rejected(
            422,
            "no record in this request concerns a device Airlock knows"
            if reports
            else "no alert records in this request",
        )
    signals: list[Signal] = []
    for report, match in matches:
        signals.append(
            raise_signal(
                origin=Signal.Origin.SENSOR,
                kind=report.kind,
                severity=report.severity,
                detail=report.detail,
                device=match.device,
                sessions=match.sessions,
                user=match.user,
                sensor=sensor,
                format=report.format,
                address=match.address,
                raw=report.raw,
                source_ip=source_ip,
            )
        )
    return {
        "accepted": len(signals),
        "ignored": len(unknown) + skipped,
        "signals": [
            {
                "code": str(s.code),
                "device": s.device.slug if s.device else None,
                "severity": s.severity,
                "sessions": s.sessions.count(),
                "actions": s.actions,
            }
            for s in signals
        ],
    }
