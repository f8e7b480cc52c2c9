"""The audit trail is append-only and hash-chained: verify() and
`manage.py verifyaudit` name the first event that was edited, deleted,
inserted or reordered; the ORM refuses to change or delete events."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from datetime import timezone as dt_timezone
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from broker import audit
from broker.models import AppendOnlyError, AuditChainHead, AuditEvent

TABLE = AuditEvent._meta.db_table


def sql(statement: str, params: list | None = None) -> None:
    """Tamper with the table the way someone with database access would."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def chain(n: int) -> list[AuditEvent]:
    return [
        audit.record(
            "test.event", actor="alice", target=f"thing:{i}", source_ip="192.0.2.7", data={"i": i}
        )
        for i in range(n)
    ]


def test_audit_chain_verifies_untouched_events(db):
    chain(3)
    assert audit.verify() is None


def test_an_empty_chain_verifies(db):
    assert audit.verify() is None


def test_each_event_carries_the_hash_of_the_one_before(db):
    events = chain(3)
    assert events[0].prev_hash == audit.GENESIS
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    head = AuditChainHead.objects.get(id=1)
    assert (head.last_id, head.last_hash) == (events[2].id, events[2].hash)


def test_audit_chain_names_an_edited_row(db):
    events = chain(3)
    sql(f"UPDATE {TABLE} SET target = %s WHERE id = %s", ["forged", events[1].pk])
    problem = audit.verify()
    assert problem is not None and problem.event_id == events[1].pk
    assert "edited" in problem.message


@pytest.mark.parametrize(
    "column, value", [("actor", "mallory"), ("action", "test.other"), ("source_ip", "198.51.100.1")]
)
def test_an_edit_to_any_hashed_column_is_caught(db, column, value):
    events = chain(3)
    sql(f"UPDATE {TABLE} SET {column} = %s WHERE id = %s", [value, events[2].pk])
    assert audit.verify().event_id == events[2].pk


def test_an_edited_time_is_caught(db):
    events = chain(3)
    sql(
        f"UPDATE {TABLE} SET at = %s WHERE id = %s",
        [datetime(2020, 1, 1, tzinfo=UTC), events[0].pk],
    )
    assert audit.verify().event_id == events[0].pk


def test_audit_chain_names_the_event_after_a_deleted_one(db):
    events = chain(4)
    sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[1].pk])
    problem = audit.verify()
    assert problem.event_id == events[2].pk
    assert "does not follow" in problem.message


def test_deleting_the_newest_events_is_caught_by_the_chain_head(db):
    events = chain(4)
    sql(f"DELETE FROM {TABLE} WHERE id >= %s", [events[2].pk])
    problem = audit.verify()
    assert problem is not None and problem.event_id is None
    assert "deleted" in problem.message


def test_an_event_appended_without_record_is_named_even_with_correct_hashes(db):
    events = chain(3)
    last = events[-1]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    digest = audit.compute_hash(last.hash, at, "mallory", "test.event", "x", None, {})
    # Through the ORM (inserts are allowed), with a hash the attacker computed.
    forged = AuditEvent(
        id=last.id + 1,
        at=at,
        actor="mallory",
        action="test.event",
        target="x",
        data={},
        prev_hash=last.hash,
        hash=digest,
    )
    forged.save()
    problem = audit.verify()
    assert problem.event_id == forged.id
    assert "inserted" in problem.message


def test_an_event_inserted_in_the_middle_is_caught(db):
    events = chain(4)
    # Make room after events[1] by renumbering the later rows, then insert a
    # forged event that links correctly to events[1].
    sql(f"UPDATE {TABLE} SET id = id + 1000000 WHERE id > %s", [events[1].pk])
    sql(f"UPDATE {TABLE} SET id = id - 999999 WHERE id > 1000000")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    digest = audit.compute_hash(events[1].hash, at, "mallory", "test.event", "x", None, {})
    AuditEvent(
        id=events[1].pk + 1,
        at=at,
        actor="mallory",
        action="test.event",
        target="x",
        data={},
        prev_hash=events[1].hash,
        hash=digest,
    ).save()
    problem = audit.verify()
    # The forged row links backwards, so the chain breaks at the row after it.
    assert problem.event_id == events[2].pk + 1
    assert "does not follow" in problem.message


def test_two_swapped_events_are_caught(db):
    events = chain(4)
    a, b = events[1].pk, events[2].pk
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [-1, a])
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [a, b])
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [b, -1])
    problem = audit.verify()
    assert problem.event_id == a
    assert "reordered" in problem.message


def test_record_keeps_what_json_can_hold_and_the_hash_covers_it(db):
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    event = audit.record("test.event", data={"when": when, "n": 1.5, "name": "Zoë"})
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.data == {"when": str(when), "n": 1.5, "name": "Zoë"}
    assert audit.verify() is None


def test_a_rolled_back_event_leaves_the_chain_intact(db):
    chain(2)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit.record("test.rolled-back")
            raise RuntimeError("the caller's work failed")
    chain(1)
    assert not AuditEvent.objects.filter(action="test.rolled-back").exists()
    assert audit.verify() is None


# --- the ORM refuses to change history -----------------------------------------------


def test_saving_an_existing_event_is_refused(db):
    event = chain(1)[0]
    event.target = "forged"
    with pytest.raises(AppendOnlyError):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).target == "thing:0"


def test_deleting_an_event_is_refused(db):
    event = chain(1)[0]
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_bulk_update_and_delete_are_refused(db):
    chain(2)
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().update(target="forged")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(action="test.event").delete()
    assert AuditEvent.objects.count() == 2
    assert audit.verify() is None


# --- manage.py verifyaudit ------------------------------------------------------------


def test_verifyaudit_reports_an_intact_chain(db):
    chain(3)
    out = StringIO()
    call_command("verifyaudit", stdout=out)
    assert "Audit chain intact: 3 events" in out.getvalue()


def test_verifyaudit_fails_naming_the_edited_event(db):
    events = chain(3)
    sql(f"UPDATE {TABLE} SET data = %s WHERE id = %s", ['{"i": 99}', events[1].pk])
    with pytest.raises(CommandError) as failure:
        call_command("verifyaudit")
    assert f"event {events[1].pk} (" in str(failure.value)
    assert "test.event thing:1" in str(failure.value)


def test_verifyaudit_exits_non_zero_on_a_real_database_file_edited_behind_its_back(tmp_path):
    """The operator's path end to end: a broker's SQLite file, edited with the
    sqlite3 tool, and the command's exit status."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["AIRLOCK_VAR_DIR"] = str(tmp_path)
    base = Path(settings.BASE_DIR)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert manage("migrate", "--noinput").returncode == 0
    made = manage(
        "shell",
        "-c",
        "from broker import audit\n"
        "for i in range(5): audit.record('test.event', target=f'thing:{i}')",
    )
    assert made.returncode == 0, made.stderr
    intact = manage("verifyaudit")
    assert intact.returncode == 0, intact.stderr
    assert "intact: 5 events" in intact.stdout

    with sqlite3.connect(tmp_path / "airlock.sqlite3") as db:
        third = db.execute(f"SELECT id FROM {TABLE} ORDER BY id LIMIT 1 OFFSET 2").fetchone()[0]
        db.execute(f"UPDATE {TABLE} SET target = 'thing:edited' WHERE id = ?", [third])
    broken = manage("verifyaudit")
    assert broken.returncode != 0
    assert f"BROKEN at event {third} (" in broken.stderr
