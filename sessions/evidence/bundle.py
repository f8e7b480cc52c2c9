"""Evidence bundles: one session, exported as a zip an auditor can hand to
someone who trusts only the deployment's public key.

Members:
    recording.cast        the asciicast recording, byte for byte (recording.webm
                          and input_log.cast for browser RDP sessions)
    session.json          who, which device, grant, window, times, bytes, hashes
    commands.json         the command index
    file_transfers.json   the file-transfer log
    signals.json          signals that touched the session
    audit_events.json     the session's audit events with their chain hashes
    manifest.json         SHA-256 and size of every member above
    manifest.sig          Ed25519 signature of manifest.json (detached)

The deployment's signing key (settings.SIGNING_KEY: AIRLOCK_SIGNING_KEY or
_FILE in production, generated into var/ on first start otherwise) signs the
exact bytes of manifest.json. `verify()` needs only the public key: it checks
the signature, then every member against the manifest, then the recording
against session.json and each audit event against its own chain hash, and
names every member that does not match.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.utils import timezone

from broker.audit import compute_hash
from broker.models import AuditEvent
from sessions.models import Session

FORMAT = "airlock-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RECORDING = "recording.cast"


# --- the key ------------------------------------------------------------------------


class SigningKeyError(ValueError):
    """A signing or public key that cannot be read."""


def signing_key() -> Ed25519PrivateKey:
    try:
        raw = base64.b64decode(settings.SIGNING_KEY.strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            "AIRLOCK_SIGNING_KEY is not the base64 of a 32-byte Ed25519 key"
        ) from exc


def public_key_text(key: Ed25519PublicKey | None = None) -> str:
    """The public key as verifyevidence accepts it: base64 of 32 bytes."""
    key = key or signing_key().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_fingerprint(key: Ed25519PublicKey | None = None) -> str:
    key = key or signing_key().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def load_public_key(text: str) -> Ed25519PublicKey:
    """base64 of the 32 raw bytes, or a PEM SubjectPublicKeyInfo."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise SigningKeyError("the PEM key is not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except SigningKeyError:
        raise
    except (ValueError, TypeError) as exc:
        raise SigningKeyError("not an Ed25519 public key (base64 of 32 bytes, or PEM)") from exc


# --- building ----------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return (
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode()
        + b"\n"
    )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def session_events(session: Session) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target=f"session {session.code}").order_by("id"))


def members_for(
    session: Session, recording: bytes, input_log: bytes | None = None
) -> dict[str, bytes]:
    grant = session.grant
    meta = {
        "session": str(session.code),
        "protocol": session.protocol,
        "client_kind": session.client_kind,
        "source_ip": session.source_ip,
        "user": session.user.username,
        "vendor": session.user.vendor.name if session.user.vendor_id else None,
        "device": {
            "slug": session.device.slug,
            "name": session.device.name,
            "zone": session.device.zone.name,
            "site": session.device.zone.site.name,
        },
        "grant": {
            "code": str(grant.code),
            "starts_at": _iso(grant.starts_at),
            "ends_at": _iso(grant.ends_at),
        },
        "started_at": _iso(session.started_at),
        "ended_at": _iso(session.ended_at),
        "end_reason": session.end_reason,
        "bytes_in": session.bytes_in,
        "bytes_out": session.bytes_out,
        "gateway": session.gateway_id,
        "recording": session.recording,
        "recording_sha256": session.recording_sha256,
        "artefacts": session.artefacts or {},
    }
    commands = [{"t": c.t, "kind": c.kind, "text": c.text} for c in session.commands.all()]
    files = [
        {
            "at": _iso(f.at),
            "path": f.path,
            "direction": f.direction,
            "size": f.size,
            "sha256": f.sha256,
            "allowed": f.allowed,
        }
        for f in session.file_transfers.all()
    ]
    signals = [
        {
            "code": str(s.code),
            "at": _iso(s.at),
            "origin": s.origin,
            "kind": s.kind,
            "severity": s.severity,
            "detail": s.detail,
            "actions": s.actions,
        }
        for s in session.signals.all()
    ]
    events = [
        {
            "id": e.id,
            "at": e.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "source_ip": e.source_ip,
            "data": e.data,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }
        for e in session_events(session)
    ]
    members = {
        recording_member(session): recording,
        "session.json": _json(meta),
        "commands.json": _json(commands),
        "file_transfers.json": _json(files),
        "signals.json": _json(signals),
        "audit_events.json": _json(events),
    }
    if input_log is not None:
        # Browser RDP: the typed text, clicks and clipboard log next to the video.
        members["input_log.cast"] = input_log
    return members


def recording_member(session: Session) -> str:
    """recording.cast for terminal sessions, recording.webm (etc.) for video."""
    suffix = session.recording.rsplit(".", 1)[-1] if "." in session.recording else "cast"
    return f"recording.{suffix}" if suffix in {"cast", "webm", "mp4"} else RECORDING


def build(
    session: Session,
    recording: bytes,
    *,
    input_log: bytes | None = None,
    at: datetime | None = None,
) -> bytes:
    """The signed zip for one session (the caller checked it may be exported)."""
    members = members_for(session, recording, input_log)
    key = signing_key()
    manifest = _json(
        {
            "format": FORMAT,
            "session": str(session.code),
            "created_at": (at or timezone.now()).isoformat(),
            "public_key": public_key_text(key.public_key()),
            "members": {
                name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                for name, data in members.items()
            },
        }
    )
    signature = _json(
        {
            "algorithm": "ed25519",
            "signs": MANIFEST,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "public_key_fingerprint": public_key_fingerprint(key.public_key()),
            "signature": base64.b64encode(key.sign(manifest)).decode(),
        }
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(MANIFEST, manifest)
        zf.writestr(SIGNATURE, signature)
    return out.getvalue()


# --- verifying (offline: the zip and a public key, no database) --------------------


@dataclass
class Report:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (member, what)
    checked: list[str] = field(default_factory=list)
    session: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, member: str, what: str) -> None:
        self.problems.append((member, what))


def verify(data: bytes, public_key: Ed25519PublicKey) -> Report:
    report = Report()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        report.bad("(bundle)", "is not a zip file")
        return report
    contents: dict[str, bytes] = {}
    with zf:
        for info in zf.infolist():
            try:
                contents[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
                # A changed byte in the compressed data fails the zip's own CRC.
                report.bad(info.filename, f"is damaged in the zip ({exc})")
    manifest_bytes = contents.get(MANIFEST)
    sig_bytes = contents.get(SIGNATURE)
    if manifest_bytes is None:
        report.bad(MANIFEST, "is missing")
        return report
    if sig_bytes is None:
        report.bad(SIGNATURE, "is missing")
        return report
    if not _signature_ok(manifest_bytes, sig_bytes, public_key, report):
        return report
    report.checked += [MANIFEST, SIGNATURE]
    manifest = json.loads(manifest_bytes)
    report.session = str(manifest.get("session", ""))
    listed = manifest.get("members") or {}
    for name, expected in listed.items():
        body = contents.get(name)
        if body is None:
            if not any(p[0] == name for p in report.problems):
                report.bad(name, "is listed in the manifest but missing from the bundle")
            continue
        if hashlib.sha256(body).hexdigest() != expected.get("sha256") or len(body) != expected.get(
            "size"
        ):
            report.bad(name, "does not match its SHA-256 in the signed manifest (changed)")
        else:
            report.checked.append(name)
    for name in contents:
        if name not in listed and name not in (MANIFEST, SIGNATURE):
            report.bad(name, "is in the bundle but not in the signed manifest (added)")
    if report.ok:
        _cross_checks(contents, report)
    return report


def _signature_ok(
    manifest: bytes, sig_bytes: bytes, public_key: Ed25519PublicKey, report: Report
) -> bool:
    try:
        sig = json.loads(sig_bytes)
        signature = base64.b64decode(sig["signature"], validate=True)
        claimed = str(sig["manifest_sha256"])
    except (ValueError, KeyError, TypeError):
        report.bad(SIGNATURE, "is damaged (not the signature format)")
        return False
    actual = hashlib.sha256(manifest).hexdigest()
    # Every byte of manifest.sig counts: it must be exactly as Airlock wrote
    # it, for this manifest, by this key.
    if _json(sig) != sig_bytes or sig.get("algorithm") != "ed25519" or sig.get("signs") != MANIFEST:
        report.bad(SIGNATURE, "was changed (it is not the signature file Airlock wrote)")
        return False
    if sig.get("public_key_fingerprint") != public_key_fingerprint(public_key):
        report.bad(
            SIGNATURE,
            "names another signing key than the one given (changed, or "
            "the bundle was signed by another deployment)",
        )
        return False
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        if actual != claimed:
            report.bad(MANIFEST, "does not match the signature (the manifest was changed)")
        else:
            report.bad(
                SIGNATURE,
                "does not verify with this public key (the signature was "
                "changed, or the bundle was signed by another deployment)",
            )
        return False
    if actual != claimed:
        report.bad(SIGNATURE, "names another manifest hash than the signed manifest (changed)")
        return False
    return True


def _cross_checks(contents: dict[str, bytes], report: Report) -> None:
    """Consistency inside a correctly signed bundle (defence in depth)."""
    meta = json.loads(contents.get("session.json", b"{}"))
    recording = next(
        (body for name, body in contents.items() if name.startswith("recording.")), None
    )
    if recording is not None and meta.get("recording_sha256"):
        if hashlib.sha256(recording).hexdigest() != meta["recording_sha256"]:
            report.bad("recording", "does not hash to the recording SHA-256 in session.json")
    events = json.loads(contents.get("audit_events.json", b"[]"))
    for event in events:
        expected = compute_hash(
            event["prev_hash"],
            datetime.fromisoformat(event["at"]),
            event["actor"],
            event["action"],
            event["target"],
            event["source_ip"],
            event["data"],
        )
        if expected != event["hash"]:
            report.bad("audit_events.json", f"event {event['id']} does not match its chain hash")
    _side_file_checks(contents, meta, events, report)
    ends = [e for e in events if e["action"] == "session.end"]
    if (
        ends
        and meta.get("recording_sha256")
        and ends[0]["data"].get("recording_sha256") != meta["recording_sha256"]
    ):
        report.bad("session.json", "its recording SHA-256 differs from the audit chain's")


def _side_file_checks(
    contents: dict[str, bytes], meta: dict, events: list[dict], report: Report
) -> None:
    """The input log must hash to session.json's and the audit chain's SHA-256."""
    log = contents.get("input_log.cast")
    recorded = [e for e in events if e["action"] == "session.input_log"]
    if log is None:
        if recorded:
            report.bad("input_log.cast", "is missing, though the audit chain recorded one")
        return
    actual = hashlib.sha256(log).hexdigest()
    if actual != (meta.get("artefacts") or {}).get("input_log"):
        report.bad("input_log.cast", "does not hash to the input log SHA-256 in session.json")
    if not recorded or recorded[0]["data"].get("sha256") != actual:
        report.bad("input_log.cast", "does not hash to the input log SHA-256 in the audit chain")
