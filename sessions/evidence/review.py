"""Recording review: finding sessions and trusting what is played back.

- `search()` filters the sessions a user may see (vendor, user, device, zone,
  time range, protocol, end reason, has signals) and searches the command
  index and the file-transfer log: PostgreSQL full-text search over commands
  in production, substring matching on SQLite (the embedded default), and
  substring matching over file paths on both (paths do not stem).
- `integrity()` answers "may this recording be played as evidence?": the
  bytes in the recordings store must hash to the SHA-256 on the session row,
  and that must be the hash the audit chain recorded when the session ended
  (in an event whose own chain hash still verifies). Anything else is a
  tamper warning, never a silent playback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from django.core.exceptions import SuspiciousFileOperation
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from broker.audit import compute_hash
from broker.models import AuditEvent, Protocol, User
from sessions.live.recording import recordings_storage
from sessions.models import Command, FileTransfer, Session

MAX_QUERY = 200


@dataclass
class Filters:
    q: str = ""
    vendor: str = ""
    user: str = ""
    device: str = ""
    zone: str = ""
    since: date | None = None
    until: date | None = None
    protocol: str = ""
    end_reason: str = ""
    has_signals: bool = False
    live: bool = False
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        f = cls()
        f.q = (params.get("q") or "").strip()[:MAX_QUERY]
        for name in ("vendor", "user", "device", "zone", "end_reason"):
            setattr(f, name, (params.get(name) or "").strip()[:150])
        f.protocol = (params.get("protocol") or "").strip()
        if f.protocol and f.protocol not in Protocol.values:
            f.errors.append(f"Unknown protocol {f.protocol[:20]!r}.")
            f.protocol = ""
        for name in ("since", "until"):
            raw = (params.get(name) or "").strip()
            if raw:
                try:
                    setattr(f, name, date.fromisoformat(raw))
                except ValueError:
                    f.errors.append(f"{name.title()} is not a date (YYYY-MM-DD).")
        f.has_signals = params.get("has_signals") in {"1", "on", "true"}
        f.live = params.get("live") in {"1", "on", "true"}
        return f

    @property
    def active(self) -> bool:
        return any(
            [
                self.q,
                self.vendor,
                self.user,
                self.device,
                self.zone,
                self.since,
                self.until,
                self.protocol,
                self.end_reason,
                self.has_signals,
                self.live,
            ]
        )


def search(user: User, f: Filters) -> QuerySet[Session]:
    # Counts as correlated subqueries, not joins: a join over commands and
    # signals would multiply rows before the newest LIST_LIMIT are taken.
    links = Session.signals.through.objects.filter(session_id=OuterRef("pk"))
    sessions = (
        Session.objects.visible_to(user)
        .select_related("user__vendor", "device__zone__site")
        .annotate(
            signal_count=Coalesce(
                Subquery(links.values("session_id").annotate(n=Count("id")).values("n")[:1]), 0
            ),
            command_count=Coalesce(
                Subquery(
                    Command.objects.filter(session_id=OuterRef("pk"))
                    .values("session_id")
                    .annotate(n=Count("id"))
                    .values("n")[:1]
                ),
                0,
            ),
        )
    )
    if f.vendor:
        sessions = sessions.filter(
            Q(user__vendor__name__icontains=f.vendor)
            | Q(user__vendor__code=_uuid_or_none(f.vendor))
        )
    if f.user:
        sessions = sessions.filter(user__username__icontains=f.user)
    if f.device:
        sessions = sessions.filter(
            Q(device__slug__icontains=f.device) | Q(device__name__icontains=f.device)
        )
    if f.zone:
        sessions = sessions.filter(
            Q(device__zone__name__icontains=f.zone)
            | Q(device__zone__slug__icontains=f.zone)
            | Q(device__zone__code=_uuid_or_none(f.zone))
        )
    if f.since:
        sessions = sessions.filter(started_at__gte=_start_of(f.since))
    if f.until:
        sessions = sessions.filter(started_at__lt=_start_of(f.until + timedelta(days=1)))
    if f.protocol:
        sessions = sessions.filter(protocol=f.protocol)
    if f.end_reason:
        sessions = sessions.filter(end_reason__icontains=f.end_reason)
    if f.has_signals:
        sessions = sessions.filter(Exists(links))
    if f.live:
        sessions = sessions.filter(ended_at=None)
    if f.q:
        sessions = sessions.filter(
            Q(pk__in=matching_commands(f.q).values("session_id"))
            | Q(pk__in=matching_files(f.q).values("session_id"))
        )
    return sessions.order_by("-started_at")


def matching_commands(q: str) -> QuerySet[Command]:
    """Commands matching the query: full-text on PostgreSQL (so "flash
    firmware" finds "firmware --flash"), plus plain substrings on both."""
    commands = Command.objects.all()
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return commands.annotate(document=SearchVector("text", config="simple")).filter(
            Q(document=SearchQuery(q, config="simple", search_type="websearch"))
            | Q(text__icontains=q)
        )
    return commands.filter(text__icontains=q)


def matching_files(q: str) -> QuerySet[FileTransfer]:
    return FileTransfer.objects.filter(path__icontains=q)


def hits(session: Session, q: str, limit: int = 3) -> list[Command]:
    """The first matching commands of one session, for the results list."""
    if not q:
        return []
    return list(matching_commands(q).filter(session=session).order_by("t")[:limit])


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, dtime.min), timezone.get_current_timezone())


def _uuid_or_none(text: str) -> Any:
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        return None


# --- integrity -------------------------------------------------------------------


@dataclass
class Integrity:
    """Whether a recording may be played, and if not, why."""

    ok: bool
    state: str  # "verified", "tampered", "missing", "purged", "live", "unrecorded"
    message: str
    sha256: str = ""
    chain_sha256: str = ""
    event_id: int | None = None
    # The side files (the RDP input log) as read and checked with the recording.
    input_log: bytes | None = None


def stored_sha256(name: str) -> str | None:
    """SHA-256 of the recording in the recordings store; None if absent."""
    storage = recordings_storage()
    try:
        if not name or not storage.exists(name):
            return None
        digest = hashlib.sha256()
        with storage.open(name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except (SuspiciousFileOperation, OSError):
        return None


def end_event(session: Session) -> AuditEvent | None:
    """The audit event that recorded the session's end (and its hash)."""
    return (
        AuditEvent.objects.filter(action="session.end", target=f"session {session.code}")
        .order_by("id")
        .first()
    )


def event_intact(event: AuditEvent) -> bool:
    """The event's content still hashes to its chain hash, and the event
    after it (if any) still points at it."""
    expected = compute_hash(
        event.prev_hash,
        event.at,
        event.actor,
        event.action,
        event.target,
        event.source_ip,
        event.data,
    )
    if expected != event.hash:
        return False
    after = AuditEvent.objects.filter(id__gt=event.id).order_by("id").first()
    return after is None or after.prev_hash == event.hash


_UNREAD = object()


def side_file_problems(session: Session, input_log: bytes | None) -> list[str]:
    """Every side file of a recording must hash to the SHA-256 on the row and
    to the one the audit chain recorded (in an intact event): a recording is
    evidence only with everything that was written next to it."""
    if input_log_name(session) is None:
        return []
    if input_log is None:
        return ["its input log is missing from the recordings store"]
    actual = hashlib.sha256(input_log).hexdigest()
    row_sha = str((session.artefacts or {}).get("input_log", ""))
    event = (
        AuditEvent.objects.filter(action="session.input_log", target=f"session {session.code}")
        .order_by("id")
        .first()
    )
    problems = []
    if not row_sha:
        problems.append("the session row holds no SHA-256 for its input log")
    elif actual != row_sha:
        problems.append("its input log does not match the SHA-256 on the session row")
    if event is None:
        problems.append("the audit chain has no hash of its input log")
    else:
        if str((event.data or {}).get("sha256", "")) != row_sha:
            problems.append("the input log SHA-256 on the row differs from the audit chain's")
        if not event_intact(event):
            problems.append("the audit event that recorded the input log SHA-256 was altered")
    return problems


def integrity(session: Session, content: Any = _UNREAD, input_log: Any = _UNREAD) -> Integrity:
    """Check a recording against the session row and the audit chain.

    With `content` (the bytes read from the store, or None when it could not
    be read) the check is of those very bytes, so a caller can serve or
    export exactly what was verified (see verified_recording)."""
    if session.is_live:
        return Integrity(
            False, "live", "This session is still live; its recording is checked once it has ended."
        )
    if session.recording_purged_at:
        return Integrity(
            False,
            "purged",
            f"The recording was deleted on {session.recording_purged_at:%Y-%m-%d} "
            "under the zone's retention period; its SHA-256 "
            f"{session.recording_sha256 or '(none)'} stays on record.",
        )
    if not session.recording:
        return Integrity(False, "unrecorded", "This session has no recording.")
    event = end_event(session)
    chain_sha = str((event.data or {}).get("recording_sha256", "")) if event else ""
    if content is _UNREAD:
        actual = stored_sha256(session.recording)
    else:
        actual = None if content is None else hashlib.sha256(content).hexdigest()
    if actual is None:
        return Integrity(
            False,
            "missing",
            "The recording file is missing from the recordings store.",
            chain_sha256=chain_sha,
        )
    if input_log is _UNREAD:
        input_log = read_input_log(session)
    problems = side_file_problems(session, input_log)
    if not session.recording_sha256:
        problems.append("the session row holds no SHA-256 for it")
    elif actual != session.recording_sha256:
        problems.append("its SHA-256 does not match the one on the session row")
    if event is None:
        problems.append("the audit chain has no end event for the session")
    else:
        if chain_sha != session.recording_sha256:
            problems.append("the session row's SHA-256 differs from the one in the audit chain")
        if not event_intact(event):
            problems.append("the audit event that recorded its SHA-256 was altered")
    if problems:
        return Integrity(
            False,
            "tampered",
            "The recording may have been tampered with: " + "; ".join(problems) + ".",
            sha256=actual,
            chain_sha256=chain_sha,
            event_id=event.id if event else None,
        )
    return Integrity(
        True,
        "verified",
        "SHA-256 matches the session record and the audit chain.",
        sha256=actual,
        chain_sha256=chain_sha,
        event_id=event.id if event else None,
        input_log=input_log,
    )


def verified_recording(session: Session) -> tuple[Integrity, bytes | None]:
    """Read the recording once and check those bytes: what the player plays
    and the evidence bundle holds is what was verified, even if the file is
    swapped between the check and the read. The bytes only when it holds."""
    if session.is_live or session.recording_purged_at or not session.recording:
        return integrity(session), None
    content = _read_stored(session.recording)
    check = integrity(session, content, read_input_log(session))
    return check, content if check.ok else None


VIDEO_SUFFIXES = {".webm": "video/webm", ".mp4": "video/mp4"}


def media_type(session: Session) -> str:
    """What the recording is: an asciicast (terminal sessions) or a video
    (browser RDP sessions, whose typed text is in a separate input log)."""
    for suffix, content_type in VIDEO_SUFFIXES.items():
        if session.recording.endswith(suffix):
            return content_type
    return "application/x-asciicast"


def input_log_name(session: Session) -> str | None:
    """The RDP input log kept next to a video recording, if any."""
    for suffix in VIDEO_SUFFIXES:
        if session.recording.endswith(suffix):
            return session.recording.removesuffix(suffix) + ".input.cast"
    return None


def read_input_log(session: Session) -> bytes | None:
    name = input_log_name(session)
    return None if name is None else _read_stored(name)


def _read_stored(name: str) -> bytes | None:
    storage = recordings_storage()
    try:
        if not name or not storage.exists(name):
            return None
        with storage.open(name, "rb") as fh:
            return fh.read()
    except (SuspiciousFileOperation, OSError):
        return None


def read_recording(session: Session) -> bytes:
    """The stored bytes, unchecked (tests and tools; views use verified_recording)."""
    storage = recordings_storage()
    with storage.open(session.recording, "rb") as fh:
        return fh.read()


def timeline(session: Session) -> list[dict[str, Any]]:
    """Commands, file transfers and signals of a session, each with the
    player time (seconds from the start) it jumps to."""
    start = session.started_at
    items: list[dict[str, Any]] = []
    for c in session.commands.all():
        items.append({"t": c.t, "kind": "command", "text": c.text, "label": c.get_kind_display()})
    for f in session.file_transfers.all():
        verb = "upload" if f.direction == FileTransfer.Direction.UPLOAD else "download"
        items.append(
            {
                "t": max(0.0, (f.at - start).total_seconds()),
                "kind": "file",
                "text": f.path,
                "label": f"{verb}{'' if f.allowed else ' refused'}",
                "detail": f"{f.size} bytes, sha256 {f.sha256[:16]}…" if f.sha256 else "",
            }
        )
    if input_log_name(session) is not None and not session.is_live:
        # Browser RDP: clicks and clipboard transfers from the input log, only
        # from a log that is still what the row and the audit chain hashed.
        from sessions.doors.rdp.consumer import input_log_markers

        log = read_input_log(session)
        problems = side_file_problems(session, log)
        if problems:
            items.append(
                {
                    "t": 0.0,
                    "kind": "tamper",
                    "text": "Input log not shown: " + "; ".join(problems) + ".",
                    "label": "tampered",
                }
            )
        else:
            items.extend(input_log_markers(log or b""))
    for s in session.signals.all():
        items.append(
            {
                "t": max(0.0, (s.at - start).total_seconds()),
                "kind": "signal",
                "text": f"{s.kind}: {s.detail}"[:300],
                "label": s.severity,
            }
        )
    items.sort(key=lambda item: item["t"])
    return items


def timeline_json(session: Session) -> str:
    return json.dumps(timeline(session))
