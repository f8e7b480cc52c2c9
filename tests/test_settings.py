"""Settings are read from the environment; the embedded default makes and
keeps its own keys in var/."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)

PRINT_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({
    "secret_key": settings.SECRET_KEY,
    "vault_key": settings.VAULT_KEY,
    "db_engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "channel_layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "celery_broker": settings.CELERY_BROKER_URL,
    "celery_eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "email_backend": settings.EMAIL_BACKEND,
    "email_password": getattr(settings, "EMAIL_HOST_PASSWORD", ""),
    "debug": settings.DEBUG,
}))
"""


def clean_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no AIRLOCK_*, DATABASE_URL or REDIS_URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRLOCK_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(DJANGO_SETTINGS_MODULE="broker.settings", AIRLOCK_VAR_DIR=str(var_dir), **extra)
    return env


def read_settings(var_dir: Path, **extra: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=BASE_DIR,
        env=clean_env(var_dir, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_mode_generates_its_keys_into_var_readable_by_the_owner_only(tmp_path):
    first = read_settings(tmp_path)
    assert len(first["secret_key"]) >= 50
    assert (tmp_path / "secret_key").read_text().strip() == first["secret_key"]
    assert (tmp_path / "vault_key").read_text().strip() == first["vault_key"]
    assert mode(tmp_path / "secret_key") == 0o600
    assert mode(tmp_path / "vault_key") == 0o600


def test_embedded_mode_reuses_its_keys_on_the_next_start(tmp_path):
    first = read_settings(tmp_path)
    second = read_settings(tmp_path)
    assert second["secret_key"] == first["secret_key"]
    assert second["vault_key"] == first["vault_key"]
    # Every generated file stays private to the owner.
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir() if p.name.endswith("_key"))


def test_two_processes_starting_at_once_agree_on_one_key(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRINT_SETTINGS],
            cwd=BASE_DIR,
            env=clean_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert len({r["secret_key"] for r in results}) == 1
    assert len({r["vault_key"] for r in results}) == 1
    # No temporary files are left behind.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_generated_vault_key_is_32_random_bytes_in_base64(tmp_path):
    import base64

    key = read_settings(tmp_path)["vault_key"]
    assert len(base64.b64decode(key, validate=True)) == 32


def test_secrets_are_read_from_the_files_their_FILE_variables_name(tmp_path):
    var_dir = tmp_path / "var"
    (tmp_path / "sk").write_text("k" * 20 + "from-a-file-" + "x" * 30 + "\n")
    (tmp_path / "vk").write_text("A" * 43 + "=\n")
    (tmp_path / "smtp").write_text("smtp-pass-from-file\n")
    got = read_settings(
        var_dir,
        AIRLOCK_SECRET_KEY_FILE=str(tmp_path / "sk"),
        AIRLOCK_VAULT_KEY_FILE=str(tmp_path / "vk"),
        AIRLOCK_EMAIL_HOST="mail.example.test",
        AIRLOCK_EMAIL_PASSWORD_FILE=str(tmp_path / "smtp"),
    )
    assert got["secret_key"] == "k" * 20 + "from-a-file-" + "x" * 30
    assert got["vault_key"] == "A" * 43 + "="
    assert got["email_password"] == "smtp-pass-from-file"
    # Nothing was generated: the configured keys are the only ones.
    assert not (var_dir / "secret_key").exists()
    assert not (var_dir / "vault_key").exists()


def test_a_secret_in_the_environment_wins_over_its_file(tmp_path):
    (tmp_path / "sk").write_text("from-the-file")
    got = read_settings(
        tmp_path / "var",
        AIRLOCK_SECRET_KEY="from-the-environment",
        AIRLOCK_SECRET_KEY_FILE=str(tmp_path / "sk"),
    )
    assert got["secret_key"] == "from-the-environment"


def test_an_unreadable_secret_file_stops_the_start_with_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=BASE_DIR,
        env=clean_env(tmp_path, AIRLOCK_SECRET_KEY_FILE=str(tmp_path / "missing")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "AIRLOCK_SECRET_KEY_FILE names" in done.stderr
    assert "cannot be read" in done.stderr
    assert not (tmp_path / "secret_key").exists()


def test_an_empty_key_file_in_var_is_refused_not_used(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    done = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=BASE_DIR,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "is empty" in done.stderr


def test_the_embedded_default_is_sqlite_in_var_with_in_memory_layer_and_console_email(tmp_path):
    got = read_settings(tmp_path)
    assert got["db_engine"] == "django.db.backends.sqlite3"
    assert got["db_name"] == str(tmp_path / "airlock.sqlite3")
    assert got["channel_layer"] == "channels.layers.InMemoryChannelLayer"
    assert got["celery_eager"] is True
    assert got["email_backend"] == "django.core.mail.backends.console.EmailBackend"
    assert got["debug"] is False


def test_database_url_redis_url_and_email_host_select_the_production_engines(tmp_path):
    got = read_settings(
        tmp_path,
        DATABASE_URL="postgres://airlock:pw@db.example.test:5432/airlock",
        REDIS_URL="redis://redis.example.test:6379/0",
        AIRLOCK_EMAIL_HOST="mail.example.test",
    )
    assert got["db_engine"] == "django.db.backends.postgresql"
    assert got["db_name"] == "airlock"
    assert got["channel_layer"].startswith("channels_redis.")
    assert got["celery_broker"] == "redis://redis.example.test:6379/0"
    assert got["celery_eager"] is False
    assert got["email_backend"] == "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize(
    "value, expected",
    [("1", True), ("true", True), ("on", True), ("0", False), ("no", False), ("", False)],
)
def test_debug_is_read_as_a_boolean(tmp_path, value, expected):
    assert read_settings(tmp_path, AIRLOCK_DEBUG=value)["debug"] is expected


def test_the_readme_documents_every_environment_variable_the_settings_read():
    import re

    source = (BASE_DIR / "broker" / "settings.py").read_text()
    readme = (BASE_DIR / "README.md").read_text()
    names = set(re.findall(r"\b(AIRLOCK_[A-Z0-9_]+|DATABASE_URL|REDIS_URL)\b", source))
    names = {n.removesuffix("_FILE") for n in names}
    undocumented = sorted(n for n in names if f"`{n}`" not in readme)
    assert undocumented == [], "add these to the README's configuration table"
