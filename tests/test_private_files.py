"""Secrets on the host: var/ is 0700 and everything in it 0600, and the
broker and the gateway refuse to start while anything there is looser."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from broker.checks import airlock_private_files

BASE_DIR = Path(settings.BASE_DIR)
REFUSAL = "can be read by other users of this machine"

# Creates files the way libraries do, passing no mode: SQLite's -wal/-shm,
# an evidence export, a temporary upload.
WRITE_FILES = """
import django, os, sys
django.setup()
from django.conf import settings
from django.db import connection
with connection.cursor() as c:
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE IF NOT EXISTS t (x)")
    c.execute("INSERT INTO t VALUES (1)")
    (settings.VAR_DIR / "evidence").mkdir()
    (settings.VAR_DIR / "evidence" / "bundle.zip").write_bytes(b"zip")
    from django.core.files.uploadedfile import TemporaryUploadedFile
    up = TemporaryUploadedFile("a.bin", "application/octet-stream", 3, None)
    up.write(b"abc"); up.flush()
    # -wal/-shm go away when the last connection closes: look at them now.
    paths = [settings.VAR_DIR / n for n in ("airlock.sqlite3-wal", "airlock.sqlite3-shm")]
    for path in [*paths, up.temporary_file_path()]:
        print(oct(os.stat(path).st_mode & 0o777))
"""


def clean_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRLOCK_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(DJANGO_SETTINGS_MODULE="broker.settings", AIRLOCK_VAR_DIR=str(var_dir))
    return env


def run(var_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=clean_env(var_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_fresh_var_directory_is_0700_and_every_file_a_process_creates_in_it_is_0600(tmp_path):
    var_dir = tmp_path / "var"
    done = run(var_dir, "-c", WRITE_FILES)
    assert done.returncode == 0, done.stderr
    assert mode(var_dir) == 0o700
    created = [p for p in var_dir.rglob("*")]
    assert {p.name for p in created} >= {
        "secret_key",
        "vault_key",
        "signing_key",
        "airlock.sqlite3",
        "evidence",
        "bundle.zip",
    }
    for path in created:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert done.stdout.split() == ["0o600", "0o600", "0o600"]


def test_this_process_creates_files_for_its_own_user_only(tmp_path):
    path = tmp_path / "written-without-a-mode"
    path.write_text("x")
    (tmp_path / "d").mkdir()
    assert mode(path) == 0o600
    assert mode(tmp_path / "d") == 0o700


@pytest.mark.parametrize("command", ["rungateway", "runbroker"])
def test_the_broker_and_the_gateway_refuse_to_start_while_var_is_readable_by_others(
    tmp_path, command
):
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    var_dir.chmod(0o755)
    done = run(var_dir, "manage.py", command, "--listen", "127.0.0.1:0")
    assert done.returncode != 0
    assert REFUSAL in done.stderr
    assert "chmod -R go-rwx" in done.stderr
    assert mode(var_dir) == 0o755  # refused, not silently changed


def test_a_database_file_readable_by_others_is_refused_even_in_a_private_var(tmp_path):
    var_dir = tmp_path / "var"
    assert run(var_dir, "manage.py", "check").returncode == 0
    db = var_dir / "airlock.sqlite3"
    db.write_bytes(b"")
    db.chmod(0o644)
    done = run(var_dir, "manage.py", "rungateway", "--listen", "127.0.0.1:0")
    assert done.returncode != 0
    assert f"{db} (0644) {REFUSAL}" in done.stderr


def test_a_recording_readable_by_the_group_is_refused_in_process(settings, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    settings.RECORDINGS_DIR = recordings
    assert airlock_private_files() == []
    (recordings / "s.cast").write_text("{}")
    (recordings / "s.cast").chmod(0o640)
    errors = airlock_private_files()
    assert [e.id for e in errors] == ["airlock.E010"]
    with pytest.raises(SystemCheckError, match=REFUSAL):
        call_command("check")
