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
from sessions.anomalies.formats import FormatError, Report, parse_records
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


# Unknown sensor and bad signature get one answer, so the endpoint does not
# tell a prober which sensor names exist.
NOT_SIGNED = "unknown sensor or bad signature"


def authenticate(
    headers: Mapping[str, str], body: bytes, *, at: datetime
) -> tuple[Sensor, list[Report | FormatError | None]]:
    """Return the sensor that signed this request and the parsed records,
    or raise Rejected. Only a signed, well-formed body spends the request
    id (a replay of it is refused); a hostile one spends nothing."""
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
    # Checked before the sensor is looked up, so neither answer depends on
    # whether the name exists.
    skew = abs(at.timestamp() - int(ts))
    if skew > MAX_SKEW.total_seconds():
        raise Rejected(
            401,
            "timestamp outside the 5 minute window (check the sensor's clock)",
            attack="stale_timestamp",
        )
    if len(body) > MAX_BODY:
        raise Rejected(413, f"body larger than {MAX_BODY} bytes")
    sensor = Sensor.objects.filter(name=name, is_active=True).first()
    if sensor is None:
        signature("unknown-sensor", ts, nonce, body)  # same work as a known one
        raise Rejected(401, NOT_SIGNED, attack="unknown_sensor")
    expected = signature(sensor.secret(), ts, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise Rejected(401, NOT_SIGNED, attack="bad_signature")
    try:
        records = parse_records(body)
    except FormatError as exc:
        raise Rejected(400, str(exc)) from None
    try:
        with transaction.atomic():
            SignalReceipt.objects.create(sensor=sensor, nonce=nonce, received_at=at)
    except IntegrityError:
        raise Rejected(401, "this X-Airlock-Id was already used", attack="replayed_id") from None
    return sensor, records


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


class UnknownDevice(Rejected):
    """No device matches: for a Zeek or Suricata record (a batch mostly
    about other hosts) that is not an error, only not ours."""


@dataclass
class Match:
    device: Device
    sessions: list[Session]
    user: User | None
    address: str | None
    # False when the named user has no grant or live session on the device:
    # a sensor must not lock someone by naming them (alert only).
    acts: bool = True


def resolve(report: Report, sensor: Sensor, *, at: datetime) -> Match:
    """The device a report is about and the live sessions it touches.
    Raises Rejected: 403 for a device outside the sensor's zones, 422 for an
    unknown device, user or session."""
    device = None
    address = None
    for ref in report.devices:
        device = find_device(ref, report.ports.get(ref))
        if device is not None:
            address = ref if _is_address(ref) else None
            break
    if device is None:
        raise UnknownDevice(422, f"no device has the slug or address {', '.join(report.devices)}")
    if not sensor.zones.filter(pk=device.zone_id).exists():
        raise Rejected(403, f"this sensor may not report about devices in zone {device.zone}")
    live = Session.objects.live().filter(device=device).select_related("user__vendor", "grant")
    user = None
    acts = True
    if report.user:
        user = User.objects.filter(username=report.user, vendor__isnull=False).first()
        if user is None:
            raise Rejected(422, f"no vendor user is called {report.user}")
        live = live.filter(user=user)
        acts = live.exists() or user.grants.live(at).filter(device=device).exists()
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
    return Match(device=device, sessions=list(live), user=user, address=address, acts=acts)


def find_device(ref: str, port: int | None = None) -> Device | None:
    """The device with this slug, or at this address. Devices may share an
    address (a NAT, a gateway in front of several PLCs): then the port seen
    with it decides, and without a port that tells them apart, none does."""
    if not _is_address(ref):
        return Device.objects.filter(slug=ref).select_related("zone").first()
    text = str(ipaddress.ip_address(ref))
    candidates = list(
        Device.objects.filter(Q(ssh_host=text) | Q(rdp_host=text))
        .select_related("zone")
        .order_by("pk")
    )
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    by_port = [
        d
        for d in candidates
        if (d.ssh_host == text and d.ssh_port == port)
        or (d.rdp_host == text and d.rdp_port == port)
    ]
    return by_port[0] if len(by_port) == 1 else None


def _is_address(ref: str) -> bool:
    try:
        ipaddress.ip_address(ref)
        return True
    except ValueError:
        return False


def accept(
    sensor: Sensor,
    records: list[Report | FormatError | None],
    *,
    at: datetime,
    source_ip: str | None,
) -> tuple[int, dict[str, Any]]:
    """Raise the signals of an authenticated request, record by record: a
    bad record is refused alone and the good ones are stored and acted on.
    Returns (HTTP status, body): 202 when every record was accepted or
    skipped, 207 when some were refused, and for a request whose one record
    is refused that record's status (raised as Rejected)."""
    if not sensor.take_token(at):
        raise Rejected(429, "rate limit for this sensor exceeded; retry later")
    Sensor.objects.filter(pk=sensor.pk).update(last_seen_at=at)
    results: list[dict[str, Any]] = []
    signals: list[Signal] = []
    for n, record in enumerate(records, 1):
        try:
            if isinstance(record, FormatError):
                raise Rejected(400, str(record))
            if record is None:
                results.append({"record": n, "status": 204, "result": "skipped"})
                continue
            match = resolve(record, sensor, at=at)
        except Rejected as exc:
            if len(records) == 1:
                raise
            if isinstance(exc, UnknownDevice) and record.format != "generic":
                results.append({"record": n, "status": 204, "result": "ignored", "why": str(exc)})
                continue
            results.append({"record": n, "status": exc.status, "error": str(exc)})
            continue
        signal = raise_signal(
            origin=Signal.Origin.SENSOR,
            kind=record.kind,
            severity=record.severity,
            detail=record.detail,
            device=match.device,
            sessions=match.sessions if match.acts else [],
            user=match.user,
            sensor=sensor,
            format=record.format,
            address=match.address,
            raw=record.raw,
            source_ip=source_ip,
            alert_only=not match.acts,
        )
        signals.append(signal)
        results.append({"record": n, "status": 202, "signal": str(signal.code)})
    refused = [r for r in results if r["status"] >= 400]
    body = {
        "accepted": len(signals),
        "refused": len(refused),
        "ignored": len(results) - len(signals) - len(refused),
        "results": results,
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
    return (207 if refused else 202), body
