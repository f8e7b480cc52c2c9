"""`manage.py verifyaudit`: walk the audit chain and say whether it is intact.

Exit status 0 and a one-line summary when every event follows the one
before it and matches its hash; 1 and the first bad event (id, time, action)
when any row was edited, deleted, inserted or reordered."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from broker import audit
from broker.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the hash-chained audit trail; exit non-zero naming the first bad event."

    def handle(self, *args: Any, **options: Any) -> None:
        problem, summary = audit.summary()
        if problem is not None:
            raise CommandError(f"Audit chain is BROKEN at {_describe(problem)}")
        if summary.count == 0:
            self.stdout.write("Audit chain intact: no events yet.")
            return
        self.stdout.write(
            f"Audit chain intact: {summary.count} events from {summary.first_at:%Y-%m-%d %H:%M:%S} "
            f"to {summary.last_at:%Y-%m-%d %H:%M:%S} UTC; head {summary.head_hash[:16]}."
        )


def _describe(problem: audit.Problem) -> str:
    if problem.event_id is None:
        return str(problem)
    # Read the row's fields with values_list: the row may be damaged enough
    # that only its identity is useful to the operator.
    row = (
        AuditEvent.objects.filter(id=problem.event_id).values_list("at", "action", "target").first()
    )
    if row is None:
        return str(problem)
    at, action, target = row
    return f"event {problem.event_id} ({at:%Y-%m-%d %H:%M:%S} {action} {target}): {problem.message}"
