"""The safety net behind revoke(): run every AIRLOCK_SWEEP_SECONDS (30 by
default; Celery beat in production, runbroker's in-process scheduler in the
embedded default).

1. Every live session is re-checked with authorize(); one it now refuses
   (grant ended or revoked, a lock, contract over, device retired) gets
   `terminate` published again — the push that should already have ended
   it.
2. A live session whose holder stopped heart-beating (its gateway's row is
   stale or stopped, or the session's own last_seen_at is) cannot be
   reached any more: the row is closed so the portal stops listing it.
3. Gateways silent for longer than AIRLOCK_GATEWAY_DEAD_SECONDS are marked
   stopped, so the portal stops listing them as live.
4. Spent signal ids older than the timestamp window are pruned.

Idempotent: running it twice in a row does nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from broker import audit
from broker.access import AccessDenied, authorize
from sessions.anomalies.intake import MAX_SKEW
from sessions.anomalies.models import Gateway, SignalReceipt
from sessions.live.revocation import revoke
from sessions.models import Session

log = logging.getLogger(__name__)
STALE_REASON = "the gateway holding the session stopped responding"


@dataclass
class SweepResult:
    terminated: list[str] = field(default_factory=list)
    closed_stale: list[str] = field(default_factory=list)
    receipts_pruned: int = 0
    gateways_dead: int = 0


def dead_after() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "AIRLOCK_GATEWAY_DEAD_SECONDS", 60)))


def run(at: datetime) -> SweepResult:
    result = SweepResult()
    stale = close_stale(at)
    result.closed_stale = stale
    for session in (
        Session.objects.live()
        .select_related("user__vendor", "device__zone", "grant")
        .iterator(chunk_size=500)
    ):
        try:
            authorize(
                session.user,
                session.device,
                protocol=session.protocol,
                at=at,
                source_ip=session.source_ip,
            )
        except AccessDenied as denied:
            revoke(session, reason=str(denied), by="sweep", at=at)
            result.terminated.append(str(session.code))
    # Gateways that went silent (killed, host lost) stop being listed as live.
    result.gateways_dead = Gateway.objects.filter(
        stopped_at=None, seen_at__lt=at - dead_after()
    ).update(stopped_at=at, is_accepting=False)
    result.receipts_pruned = SignalReceipt.objects.filter(
        received_at__lt=at - 2 * MAX_SKEW
    ).delete()[0]
    if result.terminated or result.closed_stale:
        log.info(
            "sweep: %d terminated, %d stale closed",
            len(result.terminated),
            len(result.closed_stale),
        )
    return result


def close_stale(at: datetime) -> list[str]:
    """Close live rows nobody holds any more."""
    # Gateways heartbeat every session they hold (sessions/live/control.py), so a
    # row whose last heartbeat is older than the cutoff has no holder: its
    # gateway died, was killed, or lost the database.
    cutoff = at - dead_after()
    candidates = Session.objects.live().filter(
        Q(last_seen_at__lt=cutoff) | Q(last_seen_at=None, started_at__lt=cutoff)
    )
    closed = []
    for session in candidates:
        if session.close(STALE_REASON, at=at):
            audit.record(
                "session.end",
                actor="sweep",
                target=f"session {session.code}",
                source_ip=session.source_ip,
                data={"reason": STALE_REASON, "gateway": session.gateway_id},
            )
            closed.append(str(session.code))
    return closed
