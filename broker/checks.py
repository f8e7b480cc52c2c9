"""System checks (tag "deploy") that refuse unsafe production settings, so
`manage.py check --deploy` tells an operator exactly what is wrong.

The embedded default (`make run`) fails every one of them on purpose: it is
one process on one machine, and none of its conveniences (a key generated
into var/, SQLite, the in-memory channel layer) is safe for a plant.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

# Words that mark a key someone typed instead of generating. Only words long
# enough that a random key does not contain them by chance.
PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "insecure",
    "placeholder",
    "secret",
    "example",
    "password",
)
MIN_SECRET_KEY_LENGTH = 50


def secret_key_problem(key: str) -> str | None:
    """Why `key` is unfit for production, or None."""
    lowered = key.lower()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"is shorter than {MIN_SECRET_KEY_LENGTH} characters"
    if len(set(key)) < 5:
        return "repeats too few characters to be random"
    if lowered.startswith("django-insecure") or any(w in lowered for w in PLACEHOLDER_WORDS):
        return "is a placeholder"
    return None


def vault_key_problem(key: str) -> str | None:
    """Why `key` cannot be the vault's AES-256 key, or None."""
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "is not base64"
    if len(raw) != 32:
        return f"decodes to {len(raw)} bytes, not 32"
    return None


def loose_paths(root: Path) -> list[Path]:
    """Paths under `root` (itself included) that another local user could read.

    Directories must be 0700 and files 0600 or stricter. Symlinks are judged
    by their target's own entry when it is walked, never followed out of root.
    """
    if not root.exists():
        return []
    loose = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if stat.S_IMODE(mode) & 0o077:
            loose.append(path)
    return loose


@register(Tags.security)
def airlock_private_files(app_configs=None, **kwargs) -> list[Error]:
    """Refuse to run (every command, runbroker and rungateway included) while
    keys, the database or recordings are readable by other local users."""
    roots = {Path(settings.VAR_DIR), Path(settings.RECORDINGS_DIR)}
    loose = sorted({p for root in roots for p in loose_paths(root)})
    if not loose:
        return []
    shown = ", ".join(f"{p} ({stat.S_IMODE(p.lstat().st_mode):04o})" for p in loose[:5])
    more = f" and {len(loose) - 5} more" if len(loose) > 5 else ""
    return [
        Error(
            f"Airlock refuses to start: {shown}{more} can be read by other users of this machine, "
            "who could copy the keys, the database or recordings.",
            hint=f"Run `chmod -R go-rwx {settings.VAR_DIR}` (directories 0700, files 0600).",
            id="airlock.E010",
        )
    ]


def _env_has(name: str) -> bool:
    return bool(os.environ.get(name) or os.environ.get(f"{name}_FILE"))


@register(Tags.security, deploy=True)
def airlock_deploy_checks(app_configs=None, **kwargs) -> list[Error]:
    errors: list[Error] = []
    try:
        key = settings.SECRET_KEY or ""
    except ImproperlyConfigured:  # Django refuses to read an empty key
        key = ""
    problem = secret_key_problem(key)
    if problem:
        errors.append(
            Error(
                f"The secret key {problem}.",
                hint="Set AIRLOCK_SECRET_KEY (or AIRLOCK_SECRET_KEY_FILE) to 50+ random characters, "
                "e.g. the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                id="airlock.E001",
            )
        )
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on: error pages would show settings and code to anyone.",
                hint="Unset AIRLOCK_DEBUG.",
                id="airlock.E002",
            )
        )
    if "InMemoryChannelLayer" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
        errors.append(
            Error(
                "The channel layer is in-memory: revocation cannot reach other processes.",
                hint="Set REDIS_URL to the Redis server every web and gateway process shares.",
                id="airlock.E003",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        errors.append(
            Error(
                "The database is SQLite, which one process on one machine can use safely.",
                hint="Set DATABASE_URL to PostgreSQL (postgres://user@host/name).",
                id="airlock.E004",
            )
        )
    if not (settings.VAULT_KEY and _env_has("AIRLOCK_VAULT_KEY")):
        errors.append(
            Error(
                "No vault key is configured; the embedded default keeps one in var/, "
                "which other machines do not share and backups may not hold.",
                hint="Set AIRLOCK_VAULT_KEY or AIRLOCK_VAULT_KEY_FILE (32 random bytes, base64), "
                "e.g. the output of `openssl rand -base64 32`.",
                id="airlock.E005",
            )
        )
    elif problem := vault_key_problem(settings.VAULT_KEY):
        errors.append(
            Error(
                f"The vault key {problem}.",
                hint="AIRLOCK_VAULT_KEY must be 32 random bytes, base64 (`openssl rand -base64 32`).",
                id="airlock.E006",
            )
        )
    signing_key = getattr(settings, "SIGNING_KEY", "")
    # The Ed25519 evidence key has the vault key's shape: 32 bytes, base64.
    if signing_key and (problem := vault_key_problem(signing_key)):
        errors.append(
            Error(
                f"The evidence signing key {problem}.",
                hint="AIRLOCK_SIGNING_KEY must be an Ed25519 private key: 32 random bytes, base64.",
                id="airlock.E007",
            )
        )
    elif not _env_has("AIRLOCK_SIGNING_KEY"):
        errors.append(
            Warning(
                "The evidence signing key was generated into var/; evidence exported by other "
                "replicas would be signed by other keys, and a lost var/ loses the key.",
                hint="Set AIRLOCK_SIGNING_KEY or AIRLOCK_SIGNING_KEY_FILE (`openssl rand -base64 32`) "
                "and publish its public half (shown on the Sessions page).",
                id="airlock.W001",
            )
        )
    return errors
