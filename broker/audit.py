"""The audit trail: append-only and hash-chained.

Each AuditEvent stores the hash of the event before it and its own hash over
(previous hash, time, actor, action, target, source address, data). Writers
serialise on the single AuditChainHead row (SELECT ... FOR UPDATE on
PostgreSQL; an IMMEDIATE transaction on SQLite), so two processes writing at
once never fork the chain. `verify()` walks the chain and names the first
row that was edited, deleted, inserted or reordered.

Never put a secret in `data`: audit data is shown to auditors and exported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from broker.models import AuditChainHead, AuditEvent

GENESIS = "0" * 64


def _canonical(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    source_ip: str | None,
    data: dict[str, Any],
) -> bytes:
    at_utc = at.astimezone(UTC)
    return json.dumps(
        [
            prev_hash,
            at_utc.isoformat(timespec="microseconds"),
            actor,
            action,
            target,
            source_ip or "",
            data,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()


def compute_hash(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    source_ip: str | None,
    data: dict[str, Any],
) -> str:
    return hashlib.sha256(
        _canonical(prev_hash, at, actor, action, target, source_ip, data)
    ).hexdigest()


def actor_label(actor: Any) -> str:
    """A user, a sensor, a plain string, or None (the system)."""
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    name = getattr(actor, "get_username", None)
    if callable(name):
        return name()
    return str(actor)


def record(
    action: str,
    *,
    actor: Any = None,
    target: Any = "",
    source_ip: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain and return it.

    Runs in its own atomic block (a savepoint inside a caller's transaction),
    holding the chain head locked until the caller's transaction commits."""
    # Round-trip data through JSON so the hash covers exactly what is stored.
    clean = json.loads(json.dumps(data or {}, default=str))
    at = at or timezone.now()
    target_text = str(target)[:300]
    actor_text = actor_label(actor)[:150]
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
        digest = compute_hash(head.last_hash, at, actor_text, action, target_text, source_ip, clean)
        event = AuditEvent.objects.create(
            at=at,
            actor=actor_text,
            action=action,
            target=target_text,
            source_ip=source_ip,
            data=clean,
            prev_hash=head.last_hash,
            hash=digest,
        )
        AuditChainHead.objects.filter(id=1).update(last_id=event.id, last_hash=digest)
    return event


@dataclass
class Problem:
    event_id: int | None
    message: str

    def __str__(self) -> str:
        where = f"event {self.event_id}" if self.event_id is not None else "chain head"
        return f"{where}: {self.message}"


@dataclass
class Summary:
    """What an intact chain holds (for `manage.py verifyaudit`)."""

    count: int
    first_at: datetime | None
    last_at: datetime | None
    head_hash: str


def verify(events: Iterable[AuditEvent] | None = None) -> Problem | None:
    """Walk the chain in id order; return the first problem, or None.

    Without `events`, the whole table and the chain head are read in one
    consistent snapshot, so writers appending meanwhile are neither blocked
    (on PostgreSQL) nor mistaken for tampering."""
    if events is not None:
        return _walk(events, head=None)[0]
    return summary()[0]


def summary() -> tuple[Problem | None, Summary]:
    """verify() of the whole table, with what an intact chain holds."""
    with _snapshot():
        head = AuditChainHead.objects.filter(id=1).first() or AuditChainHead(
            id=1, last_id=0, last_hash=GENESIS
        )
        rows = AuditEvent.objects.order_by("id").iterator(chunk_size=2000)
        return _walk(rows, head=head)


@contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent view of the rows and the head. Outside a transaction,
    PostgreSQL is asked for a read-only repeatable-read snapshot, so writers
    are not blocked; inside one (a test, a caller's atomic block) that
    transaction's view applies. A SQLite transaction is one snapshot."""
    connection = transaction.get_connection()
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _walk(
    rows: Iterable[AuditEvent], head: AuditChainHead | None
) -> tuple[Problem | None, Summary]:
    prev = GENESIS
    last_id = 0
    count = 0
    first_at = last_at = None
    for event in rows:
        # In one snapshot every appended row is at or before the head.
        if head is not None and event.id > head.last_id:
            return Problem(
                event.id,
                "comes after the chain's recorded head (it was inserted without audit.record)",
            ), _empty()
        if event.prev_hash != prev:
            return Problem(
                event.id,
                "does not follow the event before it (an event was deleted, inserted or reordered)",
            ), _empty()
        expected = compute_hash(
            prev, event.at, event.actor, event.action, event.target, event.source_ip, event.data
        )
        if expected != event.hash:
            return Problem(
                event.id, "content does not match its hash (the row was edited)"
            ), _empty()
        prev = event.hash
        last_id = event.id
        count += 1
        first_at = first_at or event.at
        last_at = event.at
    if head is not None and (head.last_hash != prev or head.last_id != last_id):
        return Problem(
            None, "the chain ends before its recorded head (the newest events were deleted)"
        ), _empty()
    return None, Summary(count=count, first_at=first_at, last_at=last_at, head_hash=prev)


def _empty() -> Summary:
    return Summary(count=0, first_at=None, last_at=None, head_hash="")
