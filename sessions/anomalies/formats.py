"""Signal payload formats: what a sensor may POST to /api/signals/.

A body is one JSON object, or JSON lines (one object per line, as Zeek's
and Suricata's JSON logs are written). Each object is recognised by shape:

- generic: `{"device": "<slug or IP address>", "severity": "low|medium|high|critical",
  "kind": "<short name>", "detail": "<text>", "user": "<username>"?, "session": "<code>"?}`
- Zeek `notice.log` (JSON writer): has `note`, and addresses in `src`/`dst`
  or `id.orig_h`/`id.resp_h`.
- Suricata EVE: `"event_type": "alert"` with an `alert` object; other EVE
  event types (flow, dns, stats ...) are not signals and are skipped.

Every adapter returns `Report`s: plain data, no database access. Mapping an
address to a device and a device to its live sessions happens in
sessions/anomalies/intake.py.
"""

from __future__ import annotations

import ipaddress
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from sessions.anomalies.models import Severity

MAX_RECORDS = 200
MAX_DEPTH = 16  # nesting of arrays/objects; EVE records need about 5
MAX_STRING = 8192  # any one string or number literal, in characters
SEVERITIES = set(Severity.values)


class FormatError(ValueError):
    """The body is not a signal Airlock understands; str() says why."""


@dataclass
class Report:
    format: str
    kind: str
    severity: str
    detail: str
    devices: list[str]  # slugs or addresses, most likely first
    user: str = ""
    session: str = ""
    # address → port seen with it, to tell apart devices sharing an address
    ports: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def parse(body: bytes) -> tuple[list[Report], int]:
    """All signal records in `body` and how many were skipped (EVE events
    that are not alerts). Raises FormatError for the first bad record; the
    intake uses parse_records() to refuse records one by one."""
    reports: list[Report] = []
    outcomes = parse_records(body)
    for n, outcome in enumerate(outcomes, 1):
        if isinstance(outcome, FormatError):
            where = f"record {n}: " if len(outcomes) > 1 else ""
            raise FormatError(f"{where}{outcome}")
        if outcome is not None:
            reports.append(outcome)
    return reports, len(outcomes) - len(reports)


def parse_records(body: bytes) -> list[Report | FormatError | None]:
    """One outcome per record in `body`: a Report, the FormatError that
    record earned, or None for a record that is not a signal (an EVE event
    that is not an alert). One bad record does not sink the batch. Raises
    FormatError for a body that is not JSON or is hostile (non-finite
    numbers, deep nesting, huge strings): refused whole, before any state."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("the body is not UTF-8") from None
    _check_shape(text)
    objects = _json_objects(text)
    if len(objects) > MAX_RECORDS:
        raise FormatError(f"at most {MAX_RECORDS} records per request")
    outcomes: list[Report | FormatError | None] = []
    for obj in objects:
        if not isinstance(obj, dict):
            outcomes.append(FormatError("the record is not a JSON object"))
            continue
        try:
            outcomes.append(parse_record(obj))
        except FormatError as exc:
            outcomes.append(exc)
    return outcomes


def _check_shape(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and literals longer than
    MAX_STRING in one linear pass, before json.loads can recurse on them."""
    depth = 0
    in_string = escaped = False
    run = 0  # length of the current string or bare literal
    for ch in text:
        if in_string:
            run += 1
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string, run = False, 0
        elif ch == '"':
            in_string, run = True, 0
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise FormatError(f"JSON nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
        elif ch in ",: \t\r\n":
            run = 0
            if ch == "\n":
                depth = 0  # JSON lines: each line starts afresh
        else:
            run += 1
        if run > MAX_STRING:
            raise FormatError(f"a JSON string or number is longer than {MAX_STRING} characters")


def _refuse_constant(name: str) -> Any:
    raise FormatError(f"{name} is not a number Airlock accepts")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to infinity
        raise FormatError(f"{text[:20]} is not a finite number")
    return value


def _loads(text: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)


def _json_objects(text: str) -> list[Any]:
    stripped = text.strip()
    if not stripped:
        raise FormatError("the body is empty")
    try:
        whole = _loads(stripped)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, FormatError):
            raise
        whole = None
    if isinstance(whole, dict):
        return [whole]
    if whole is not None:
        raise FormatError("expected a JSON object or JSON lines of objects")
    objects = []
    for n, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(_loads(line))
        except FormatError:
            raise
        except (ValueError, RecursionError) as exc:
            # A line that is not JSON at all means the body is not JSON lines.
            msg = getattr(exc, "msg", type(exc).__name__)
            raise FormatError(f"line {n} is not valid JSON ({msg})") from None
    return objects


def parse_record(obj: dict[str, Any]) -> Report | None:
    if "event_type" in obj:
        return parse_suricata(obj)
    if "note" in obj:
        return parse_zeek(obj)
    if "device" in obj:
        return parse_generic(obj)
    raise FormatError(
        'not a generic signal (no "device"), a Zeek notice (no "note") '
        'or a Suricata EVE record (no "event_type")'
    )


def _text(
    obj: dict[str, Any], key: str, *, limit: int, required: bool = False, cut: bool = False
) -> str:
    """A string field. `cut` truncates instead of refusing: for descriptive
    text a third party can plant (a certificate subject in a Zeek `sub`)."""
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise FormatError(f'"{key}" is required')
        return ""
    if not isinstance(value, str):
        raise FormatError(f'"{key}" must be a string')
    if len(value) > limit and cut:
        return value[: limit - 1].strip() + "…"
    if len(value) > limit:
        raise FormatError(f'"{key}" is longer than {limit} characters')
    return value.strip()


def parse_generic(obj: dict[str, Any]) -> Report:
    device = _text(obj, "device", limit=255, required=True)
    severity = _text(obj, "severity", limit=10, required=True).lower()
    if severity not in SEVERITIES:
        raise FormatError('"severity" must be one of low, medium, high, critical')
    kind = _text(obj, "kind", limit=80, required=True)
    session = _text(obj, "session", limit=36)
    if session:
        try:
            session = str(uuid.UUID(session))
        except ValueError:
            raise FormatError('"session" is not a session code (UUID)') from None
    return Report(
        format="generic",
        kind=kind,
        severity=severity,
        detail=_text(obj, "detail", limit=2000),
        devices=[device],
        user=_text(obj, "user", limit=150),
        session=session,
        ports=_ports((device, obj.get("port"))),
        raw=_trim(obj),
    )


# Zeek notices carry no severity. Known noisy notes are lowered; everything
# else counts as high, since a plant only forwards notices it cares about. A
# Zeek script may set `airlock_severity` on the notice to decide itself.
ZEEK_SEVERITY = {
    "Scan::Port_Scan": Severity.MEDIUM,
    "Scan::Address_Scan": Severity.MEDIUM,
    "SSL::Invalid_Server_Cert": Severity.LOW,
    "Weird::Activity": Severity.LOW,
    "SSH::Password_Guessing": Severity.HIGH,
}


def parse_zeek(obj: dict[str, Any]) -> Report:
    note = _text(obj, "note", limit=80, required=True)
    severity = str(obj.get("airlock_severity") or ZEEK_SEVERITY.get(note, Severity.HIGH)).lower()
    if severity not in SEVERITIES:
        raise FormatError('"airlock_severity" must be one of low, medium, high, critical')
    # The device is usually the one being talked to (dst / responder), but a
    # device that misbehaves is the source: try both, responder first.
    addresses = _addresses(
        obj.get("dst"), obj.get("id.resp_h"), obj.get("src"), obj.get("id.orig_h")
    )
    if not addresses:
        raise FormatError("the Zeek notice names no address (src, dst, id.orig_h, id.resp_h)")
    parts = [_text(obj, "msg", limit=1000, cut=True), _text(obj, "sub", limit=500, cut=True)]
    flow = _flow(
        obj.get("id.orig_h") or obj.get("src"),
        obj.get("id.orig_p"),
        obj.get("id.resp_h") or obj.get("dst"),
        obj.get("id.resp_p") or obj.get("p"),
    )
    detail = " — ".join(p for p in parts if p) + (f" ({flow})" if flow else "")
    return Report(
        format="zeek",
        kind=note,
        severity=severity,
        detail=detail[:2000],
        devices=addresses,
        ports=_ports(
            (obj.get("id.resp_h") or obj.get("dst"), obj.get("id.resp_p") or obj.get("p")),
            (obj.get("id.orig_h") or obj.get("src"), obj.get("id.orig_p")),
        ),
        raw=_trim(obj),
    )


def parse_suricata(obj: dict[str, Any]) -> Report | None:
    if obj.get("event_type") != "alert":
        return None
    alert = obj.get("alert")
    if not isinstance(alert, dict):
        raise FormatError('a Suricata alert record needs an "alert" object')
    signature = _text(alert, "signature", limit=500, cut=True) or "Suricata alert"
    priority = alert.get("severity", 3)
    if isinstance(priority, str) and priority.strip().isdigit():
        priority = int(priority)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise FormatError('"alert.severity" must be a whole number')
    # Suricata's severity is a priority: 1 is the most severe.
    severity = {1: Severity.HIGH, 2: Severity.MEDIUM}.get(priority, Severity.LOW)
    addresses = _addresses(obj.get("dest_ip"), obj.get("src_ip"))
    if not addresses:
        raise FormatError("the Suricata alert names no address (src_ip, dest_ip)")
    sid = alert.get("signature_id")
    kind = f"suricata:{sid}" if isinstance(sid, int) else "suricata"
    category = _text(alert, "category", limit=200, cut=True)
    flow = _flow(obj.get("src_ip"), obj.get("src_port"), obj.get("dest_ip"), obj.get("dest_port"))
    detail = signature + (f" [{category}]" if category else "") + (f" ({flow})" if flow else "")
    return Report(
        format="suricata",
        kind=kind,
        severity=severity,
        detail=detail[:2000],
        devices=addresses,
        ports=_ports(
            (obj.get("dest_ip"), obj.get("dest_port")), (obj.get("src_ip"), obj.get("src_port"))
        ),
        raw=_trim(obj),
    )


def _ports(*pairs: tuple[Any, Any]) -> dict[str, int]:
    """address → port for each (address, port) pair that has both."""
    found: dict[str, int] = {}
    for address, port in pairs:
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(address, str) or isinstance(port, bool) or not isinstance(port, int):
            continue
        if not 0 < port < 65536:
            continue
        try:
            found.setdefault(str(ipaddress.ip_address(address.strip())), port)
        except ValueError:
            continue
    return found


def _addresses(*values: Any) -> list[str]:
    found: list[str] = []
    for value in values:
        if not isinstance(value, str):
            continue
        try:
            text = str(ipaddress.ip_address(value.strip()))
        except ValueError:
            continue
        if text not in found:
            found.append(text)
    return found


def _flow(src: Any, sport: Any, dst: Any, dport: Any) -> str:
    if not (isinstance(src, str) and isinstance(dst, str)):
        return ""
    left = f"{src}:{sport}" if isinstance(sport, int) else src
    right = f"{dst}:{dport}" if isinstance(dport, (int, str)) and str(dport) else dst
    return f"{left} → {right}"


def _trim(obj: dict[str, Any]) -> dict[str, Any]:
    """The original record, kept as evidence, bounded in size (Suricata
    records can carry payloads)."""
    text = json.dumps(obj, default=str)
    if len(text) <= 8000:
        return obj
    return {
        k: v
        for k, v in obj.items()
        if k not in {"payload", "payload_printable", "packet", "rule", "http", "files"}
    }
