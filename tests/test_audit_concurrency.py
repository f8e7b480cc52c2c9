"""Writers serialise on the chain head: many threads and processes appending
at the same moment on PostgreSQL never fork the chain."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections

from broker import audit
from broker.models import AuditChainHead, AuditEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def assert_one_linear_chain(expected: int) -> None:
    assert audit.verify() is None
    events = list(AuditEvent.objects.order_by("id"))
    assert len(events) == expected
    prev_hashes = [e.prev_hash for e in events]
    # A fork would show as two events naming the same predecessor.
    assert len(set(prev_hashes)) == len(prev_hashes)
    assert prev_hashes[0] == audit.GENESIS
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.hash
    assert AuditChainHead.objects.get(id=1).last_hash == events[-1].hash


def test_threads_appending_at_once_keep_one_chain():
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                audit.record(
                    "test.concurrent", actor=f"writer{n}", target=f"thing:{i}", data={"n": n}
                )
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors
    assert_one_linear_chain(threads * per_thread)


def test_separate_processes_appending_at_once_keep_one_chain():
    """Separate interpreters, separate connections: the lock is the
    database's, not Python's."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url}
    writers, per_writer = 4, 40
    go = Path(settings.BASE_DIR)
    script = (
        "import sys, time, django\n"
        "django.setup()\n"
        "from broker import audit\n"
        "n, count, at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
        "time.sleep(max(0.0, at - time.time()))\n"
        "for i in range(count): audit.record('test.concurrent', actor=f'proc{n}', target=f'thing:{i}')\n"
    )
    import time

    start_at = str(time.time() + 3)  # all start together, after their imports
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n), str(per_writer), start_at],
            cwd=go,
            env={**env, "DJANGO_SETTINGS_MODULE": "broker.settings"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    assert_one_linear_chain(writers * per_writer)
    assert AuditEvent.objects.values("actor").distinct().count() == writers
