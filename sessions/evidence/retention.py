"""Retention: a recording is kept for its zone's `retention_days` after the
session ended, then deleted from the recordings store. The session row, its
SHA-256, the command index and the audit trail stay; each purge writes an
audit event. Run periodically (settings.CELERY_BEAT_SCHEDULE
"purge-recordings"); idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker import audit
from sessions.live.recording import recordings_storage
from sessions.models import Session

log = logging.getLogger("airlock.retention")


@dataclass
class PurgeResult:
    purged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def expired(at: datetime):
    """Ended sessions whose recording is past the zone's retention."""
    candidates = (
        Session.objects.exclude(ended_at=None)
        .exclude(recording="")
        .filter(recording_purged_at=None)
        .select_related("device__zone")
    )
    # Per-zone days: compare in Python over an index-friendly pre-filter
    # (nothing ended after `at` minus the shortest possible retention).
    return [
        s
        for s in candidates.filter(ended_at__lt=at).iterator(chunk_size=500)
        if s.ended_at + timedelta(days=s.device.zone.retention_days) <= at
    ]


def purge(at: datetime) -> PurgeResult:
    result = PurgeResult()
    storage = recordings_storage()
    for session in expired(at):
        # Compare-and-set first: two purgers never both delete and audit one.
        if (
            Session.objects.filter(pk=session.pk, recording_purged_at=None).update(
                recording_purged_at=at
            )
            != 1
        ):
            continue
        try:
            existed = storage.exists(session.recording)
            if existed:
                storage.delete(session.recording)
        except Exception as exc:
            Session.objects.filter(pk=session.pk, recording_purged_at=at).update(
                recording_purged_at=None
            )
            log.error("retention: the recording of %s could not be deleted: %s", session.code, exc)
            result.failed.append(str(session.code))
            continue
        zone = session.device.zone
        audit.record(
            "session.recording_purged",
            actor="retention",
            target=f"session {session.code}",
            data={
                "recording": session.recording,
                "recording_sha256": session.recording_sha256,
                "zone": zone.slug,
                "retention_days": zone.retention_days,
                "ended_at": session.ended_at.isoformat(),
                "file_existed": existed,
            },
        )
        result.purged.append(str(session.code))
    if result.purged:
        log.info("retention: %d recordings purged", len(result.purged))
    return result
