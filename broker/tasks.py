"""Thin Celery tasks: take ids, are idempotent, call model methods or
concept modules. Queued with transaction.on_commit by the workflows."""

from celery import shared_task
from django.utils import timezone


@shared_task
def expire_requests() -> int:
    """Mark pending requests whose window has passed undecided as expired."""
    from broker import approvals

    return approvals.expire_pending(timezone.now())


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def notify_request_submitted(request_id: int) -> int:
    from broker import notifications

    return notifications.request_submitted(request_id)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def notify_decision(approval_id: int) -> int:
    from broker import notifications

    return notifications.decision(approval_id)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def notify_request_expired(request_id: int) -> int:
    from broker import notifications

    return notifications.request_expired(request_id)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def notify_grant_revoked(grant_id: int) -> int:
    from broker import notifications

    return notifications.grant_revoked(grant_id)
