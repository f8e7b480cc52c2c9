"""`manage.py check --deploy` refuses what is unsafe in production and names
it: a placeholder or short secret key, DEBUG, the in-memory channel layer,
SQLite, a missing or malformed vault key."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from broker.checks import airlock_deploy_checks

# These tests read settings and use no database, so overriding DATABASES is
# safe here; Django warns about it in general.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")

BASE_DIR = Path(settings.BASE_DIR)
GOOD_SECRET_KEY = secrets.token_urlsafe(50)
GOOD_VAULT_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
PRODUCTION = {
    "SECRET_KEY": GOOD_SECRET_KEY,
    "DEBUG": False,
    "CHANNEL_LAYERS": {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
        }
    },
    "DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "airlock"}},
    "VAULT_KEY": GOOD_VAULT_KEY,
}


@pytest.fixture
def production(settings, monkeypatch):
    """Settings as a correct production deployment has them."""
    for name, value in PRODUCTION.items():
        setattr(settings, name, value)
    monkeypatch.setenv("AIRLOCK_VAULT_KEY", GOOD_VAULT_KEY)
    monkeypatch.delenv("AIRLOCK_VAULT_KEY_FILE", raising=False)
    settings.SIGNING_KEY = GOOD_VAULT_KEY  # same shape: 32 random bytes, base64
    monkeypatch.setenv("AIRLOCK_SIGNING_KEY", GOOD_VAULT_KEY)
    return settings


def ids() -> set[str]:
    return {error.id for error in airlock_deploy_checks()}


def test_a_correct_production_configuration_passes_every_airlock_check(production):
    assert ids() == set()


@pytest.mark.parametrize(
    "key",
    [
        "short-key",
        "x" * 60,
        "django-insecure-" + secrets.token_urlsafe(50),
        "changeme-" + secrets.token_urlsafe(50),
        "please-replace-this-placeholder-" + secrets.token_urlsafe(30),
        "secret" * 10,
        "",
    ],
)
def test_a_placeholder_or_short_secret_key_is_refused(production, key):
    production.SECRET_KEY = key
    assert ids() == {"airlock.E001"}


def test_an_evidence_signing_key_from_var_is_warned_about(production, monkeypatch):
    monkeypatch.delenv("AIRLOCK_SIGNING_KEY")
    assert ids() == {"airlock.W001"}


def test_a_malformed_evidence_signing_key_is_refused(production):
    production.SIGNING_KEY = "not-a-key"
    assert ids() == {"airlock.E007"}


def test_debug_on_is_refused(production):
    production.DEBUG = True
    assert ids() == {"airlock.E002"}


def test_the_in_memory_channel_layer_is_refused(production):
    production.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert ids() == {"airlock.E003"}


def test_sqlite_is_refused(production):
    production.DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    }
    assert ids() == {"airlock.E004"}


def test_a_vault_key_that_only_the_embedded_var_directory_holds_is_refused(production, monkeypatch):
    monkeypatch.delenv("AIRLOCK_VAULT_KEY")
    assert ids() == {"airlock.E005"}


def test_a_vault_key_given_as_a_file_counts_as_configured(production, monkeypatch):
    monkeypatch.delenv("AIRLOCK_VAULT_KEY")
    monkeypatch.setenv("AIRLOCK_VAULT_KEY_FILE", "/run/secrets/airlock_vault_key")
    assert ids() == set()


@pytest.mark.parametrize("key", ["not base64!", base64.b64encode(b"16 bytes only!!!").decode()])
def test_a_malformed_vault_key_is_refused(production, key):
    production.VAULT_KEY = key
    assert ids() == {"airlock.E006"}


def test_each_refusal_says_what_to_set(production):
    production.DEBUG = True
    production.SECRET_KEY = "changeme"
    production.DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}
    hints = " ".join(error.hint for error in airlock_deploy_checks())
    assert "AIRLOCK_SECRET_KEY" in hints
    assert "AIRLOCK_DEBUG" in hints
    assert "DATABASE_URL" in hints


# --- the command an operator runs -------------------------------------------------


def check_deploy(var_dir: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRLOCK_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    clean.update(AIRLOCK_VAR_DIR=str(var_dir), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_refuses_the_embedded_default_and_names_each_problem(tmp_path):
    done = check_deploy(tmp_path, AIRLOCK_DEBUG="1", AIRLOCK_SECRET_KEY="changeme")
    assert done.returncode != 0
    report = done.stdout + done.stderr
    for error_id in [
        "airlock.E001",
        "airlock.E002",
        "airlock.E003",
        "airlock.E004",
        "airlock.E005",
    ]:
        assert error_id in report
    assert "The database is SQLite" in report


def test_check_deploy_passes_a_correct_production_environment(tmp_path):
    done = check_deploy(
        tmp_path,
        AIRLOCK_SECRET_KEY=GOOD_SECRET_KEY,
        AIRLOCK_VAULT_KEY=GOOD_VAULT_KEY,
        DATABASE_URL="postgres://airlock@db.example.test:5432/airlock",
        REDIS_URL="redis://redis.example.test:6379/0",
        AIRLOCK_ALLOWED_HOSTS="airlock.example.test",
        AIRLOCK_SSL_REDIRECT="1",
        AIRLOCK_HSTS_SECONDS="31536000",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "airlock.E" not in done.stdout + done.stderr
    # The deployment's keys came from the environment, none from var/.
    assert not (tmp_path / "secret_key").exists()
