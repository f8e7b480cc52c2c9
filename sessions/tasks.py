"""Thin Celery tasks of the sessions app."""

from celery import shared_task
from django.utils import timezone


@shared_task
def sweep_sessions() -> dict:
    """The periodic safety net behind revoke() (sessions/live/sweep.py)."""
    from sessions.live import sweep

    result = sweep.run(timezone.now())
    return {
        "terminated": len(result.terminated),
        "closed_stale": len(result.closed_stale),
        "receipts_pruned": result.receipts_pruned,
    }


@shared_task
def purge_expired_recordings() -> dict:
    """Delete recordings past their zone's retention (sessions/evidence/retention.py)."""
    from sessions.evidence import retention

    result = retention.purge(timezone.now())
    return {"purged": len(result.purged), "failed": len(result.failed)}
