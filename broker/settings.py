"""Airlock settings: one module, driven by AIRLOCK_* environment variables.

The embedded default (no variables set) is a complete broker on one machine:
SQLite under var/, the in-memory channel layer, Celery tasks run in-process,
console email. Production names PostgreSQL (DATABASE_URL) and Redis
(REDIS_URL); `manage.py check --deploy` refuses what is unsafe there.

Secrets are read from AIRLOCK_<NAME> or from the file named by
AIRLOCK_<NAME>_FILE. In the embedded mode the secret key and the vault key
are generated into var/ (mode 0600) on first start and reused afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AIRLOCK_VAR_DIR", BASE_DIR / "var"))
# var/ holds keys, the SQLite database, recordings and demo secrets: any local
# user who can read it can open the admin as the admin. Every process that
# loads these settings creates files for its own user only, so files written
# by code that passes no mode (SQLite's -wal/-shm, evidence, uploaded temp
# files, libraries' key files) are 0600 and directories 0700 too.
# broker/checks.py refuses to start when anything in var/ is looser.
os.umask(0o077)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) as 0700. An existing looser directory is
    left as it is, so the start-up check can refuse it and say so."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def envsecret(name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names; "" if neither."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            # Fail closed, naming the variable and the file but never a value.
            raise ImproperlyConfigured(
                f"{name}_FILE names {path}, which cannot be read: {exc.strerror or exc}"
            ) from None
    return ""


def var_secret(filename: str, make: Callable[[], str]) -> str:
    """Read var/<filename>, creating it (0600) with make() on first start."""
    path = VAR_DIR / filename
    if not path.exists():
        private_dir(VAR_DIR)
        # Write a private temporary file, then link it into place: link()
        # fails if the name exists, so two processes starting at once agree
        # on one key and neither ever reads a half-written file.
        tmp = VAR_DIR / f".{filename}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(make() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new one.")
    return value


def _new_vault_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


DEBUG = envbool("AIRLOCK_DEBUG", False)
SECRET_KEY = envsecret("AIRLOCK_SECRET_KEY") or var_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# The vault key encrypts device credentials (AES-256-GCM, see broker/vault.py).
# Old keys stay readable until `manage.py rotatevaultkey` re-encrypts.
VAULT_KEY = envsecret("AIRLOCK_VAULT_KEY") or var_secret("vault_key", _new_vault_key)
VAULT_OLD_KEYS = [k for k in envsecret("AIRLOCK_VAULT_OLD_KEYS").split(",") if k.strip()]
# Ed25519 key that signs evidence bundles (sessions/evidence/bundle.py): base64 of
# the 32-byte private key. Its public half is shown in the portal, and
# `manage.py verifyevidence` needs only that.
SIGNING_KEY = envsecret("AIRLOCK_SIGNING_KEY") or var_secret(
    "signing_key", lambda: base64.b64encode(secrets.token_bytes(32)).decode()
)
_old_keys_file = VAR_DIR / "vault_old_keys"
if not envsecret("AIRLOCK_VAULT_KEY") and _old_keys_file.exists():
    VAULT_OLD_KEYS += [k for k in _old_keys_file.read_text().split() if k]

ALLOWED_HOSTS = envlist("AIRLOCK_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("AIRLOCK_CSRF_TRUSTED_ORIGINS", "")
# Public address of the portal, used in emails and in the demo's output.
PORTAL_URL = env("AIRLOCK_PORTAL_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "broker.apps.AirlockAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "axes",
    "channels",
    "broker",
    "sessions.apps.SessionsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "broker.middleware.SessionLifetimeMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "broker.middleware.RequireOTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "broker.urls"
ASGI_APPLICATION = "broker.asgi.application"
AUTH_USER_MODEL = "broker.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "broker.context_processors.airlock",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL names PostgreSQL.
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    # No persistent connections: under ASGI (web, websockets, the gateway's
    # database_sync_to_async hooks) Django closes only connections past their
    # age, so long-lived ones would pile up in worker threads (Django's
    # database docs say to disable them with ASGI).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        # A SQLite file named by URL (a second process on the embedded
        # database): the same writer serialisation as below.
        DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
else:
    private_dir(VAR_DIR)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "airlock.sqlite3",
            # IMMEDIATE transactions serialise writers, which the audit chain
            # and the compare-and-set updates rely on.
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
            # The test database is a file too (under the test run's own
            # VAR_DIR): worker threads and a second process (a gateway) then
            # share it with SQLite's normal locking and busy timeout, which an
            # in-memory shared-cache database does not honour.
            "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer and Celery: in-memory / in-process unless REDIS_URL is set.
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # A host name, though unused, keeps kombu from warning on every start.
    CELERY_BROKER_URL = "memory://localhost/"
    # Embedded default: tasks run in-process when queued.
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
# Every periodic job, in one place. Celery beat runs it in production;
# `manage.py runbroker` runs the same schedule in-process.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "expire-requests": {"task": "broker.tasks.expire_requests", "schedule": 60.0},
    "sweep-sessions": {
        "task": "sessions.tasks.sweep_sessions",
        "schedule": float(envint("AIRLOCK_SWEEP_SECONDS", 30)),
    },
}

# Recordings: written as the session runs into RECORDINGS_DIR (a local
# spool), then kept in the "recordings" storage. The default keeps them where
# they were written; an operator points AIRLOCK_RECORDINGS_STORAGE at any
# Django storage (django-storages' S3 backend, say) with its options as JSON
# in AIRLOCK_RECORDINGS_STORAGE_OPTIONS, without code changes.
RECORDINGS_DIR = Path(env("AIRLOCK_RECORDINGS_DIR", str(VAR_DIR / "recordings")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "recordings": {
        "BACKEND": env("AIRLOCK_RECORDINGS_STORAGE", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": json.loads(env("AIRLOCK_RECORDINGS_STORAGE_OPTIONS", "{}")),
    },
}
CELERY_BEAT_SCHEDULE["purge-recordings"] = {
    "task": "sessions.tasks.purge_expired_recordings",
    "schedule": float(envint("AIRLOCK_PURGE_SECONDS", 3600)),
}

# The SSH gateway (sessions/doors/ssh/gateway.py). PUBLIC_HOST/PORT are what the portal
# prints in `ssh -p PORT user+device@HOST`; the listen address is a command
# option (runbroker --gateway-listen, rungateway --listen).
GATEWAY_PUBLIC_HOST = env("AIRLOCK_GATEWAY_PUBLIC_HOST", "127.0.0.1")
GATEWAY_PUBLIC_PORT = envint("AIRLOCK_GATEWAY_PUBLIC_PORT", 2222)
GATEWAY_HOST_KEY_FILE = Path(
    env("AIRLOCK_GATEWAY_HOST_KEY_PATH", str(VAR_DIR / "ssh_host_ed25519_key"))
)
GATEWAY_LOGIN_GRACE = envint("AIRLOCK_GATEWAY_LOGIN_GRACE", 30)
GATEWAY_MAX_UNAUTH_PER_ADDRESS = envint("AIRLOCK_GATEWAY_MAX_UNAUTH_PER_ADDRESS", 10)
GATEWAY_MAX_UNAUTH_TOTAL = envint("AIRLOCK_GATEWAY_MAX_UNAUTH_TOTAL", 500)
GATEWAY_DEVICE_CONNECT_TIMEOUT = envint("AIRLOCK_GATEWAY_DEVICE_CONNECT_TIMEOUT", 10)
GATEWAY_DEVICE_LOGIN_TIMEOUT = envint("AIRLOCK_GATEWAY_DEVICE_LOGIN_TIMEOUT", 15)

# Browser RDP (sessions/doors/rdp/desktop.py): per-session Xvnc + xfreerdp + ffmpeg under
# RDP_RUN_DIR; at most RDP_MAX_SESSIONS per broker process.
RDP_RUN_DIR = Path(env("AIRLOCK_RDP_RUN_DIR", str(VAR_DIR / "rdp")))
RDP_MAX_SESSIONS = envint("AIRLOCK_RDP_MAX_SESSIONS", 8)
RDP_CONNECT_TIMEOUT = envint("AIRLOCK_RDP_CONNECT_TIMEOUT", 20)
RDP_LOGIN_TIMEOUT = envint("AIRLOCK_RDP_LOGIN_TIMEOUT", 30)
RDP_DISCONNECT_GRACE = float(env("AIRLOCK_RDP_DISCONNECT_GRACE", "5"))
RDP_MAX_CLIPBOARD = envint("AIRLOCK_RDP_MAX_CLIPBOARD", 64 * 1024)
RDP_MAX_INPUT_PER_SECOND = envint("AIRLOCK_RDP_MAX_INPUT_PER_SECOND", 400)
RDP_VIDEO_FPS = envint("AIRLOCK_RDP_VIDEO_FPS", 5)

# Live control (sessions/live/control.py, sessions/live/sweep.py, sessions/anomalies/detectors.py).
# A gateway that cannot hear its control channel refuses new sessions and
# ends live ones after the grace period.
AIRLOCK_CONTROL_GRACE_SECONDS = envint("AIRLOCK_CONTROL_GRACE_SECONDS", 30)
AIRLOCK_CONTROL_PROBE_SECONDS = float(env("AIRLOCK_CONTROL_PROBE_SECONDS", "2"))
AIRLOCK_HEARTBEAT_SECONDS = float(env("AIRLOCK_HEARTBEAT_SECONDS", "10"))
AIRLOCK_GATEWAY_DEAD_SECONDS = envint("AIRLOCK_GATEWAY_DEAD_SECONDS", 60)
AIRLOCK_EXFIL_BYTES_PER_MINUTE = envint("AIRLOCK_EXFIL_BYTES_PER_MINUTE", 64 * 1024 * 1024)

# Email: console by default, SMTP when AIRLOCK_EMAIL_HOST is set.
if env("AIRLOCK_EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = env("AIRLOCK_EMAIL_HOST")
    EMAIL_PORT = envint("AIRLOCK_EMAIL_PORT", 587)
    EMAIL_HOST_USER = env("AIRLOCK_EMAIL_USER")
    EMAIL_HOST_PASSWORD = envsecret("AIRLOCK_EMAIL_PASSWORD")
    EMAIL_USE_TLS = envbool("AIRLOCK_EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env("AIRLOCK_EMAIL_FROM", "airlock@localhost")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "broker.identity.VendorContractBackend",
]

# MFA: every view needs an OTP-verified session (broker.middleware), and
# sensitive actions need one verified in the last STEP_UP_SECONDS.
STEP_UP_SECONDS = envint("AIRLOCK_STEP_UP_SECONDS", 300)
OTP_TOTP_ISSUER = env("AIRLOCK_OTP_ISSUER", "Airlock")
INVITATION_TTL = timedelta(hours=72)
# TOTP seeds are never shown after enrolment, not even in the admin.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Throttling (django-axes): 5 failures per username and per client address.
AXES_FAILURE_LIMIT = envint("AIRLOCK_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("AIRLOCK_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Not on the password step: signing in with the password again must not wipe
# the count of wrong OTP codes. broker.identity.complete_otp_login resets the
# user's count once both factors passed.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "broker.identity.lockout_response"
AXES_VERBOSE = False
# Masked in the failure records axes keeps (passwords are masked by axes itself).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "code", "csrfmiddlewaretoken"]
# The client address is REMOTE_ADDR unless AIRLOCK_TRUSTED_PROXIES names the
# proxy in front of us; only then is X-Forwarded-For believed.
TRUSTED_PROXIES = envlist("AIRLOCK_TRUSTED_PROXIES", "")
AXES_CLIENT_IP_CALLABLE = "broker.identity.client_ip"

# Sessions: idle expiry 30 minutes, absolute 12 hours.
SESSION_COOKIE_AGE = envint("AIRLOCK_SESSION_IDLE_SECONDS", 30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_ABSOLUTE_SECONDS = envint("AIRLOCK_SESSION_ABSOLUTE_SECONDS", 12 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_COOKIES = envbool("AIRLOCK_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "broker.pages.home.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_SSL_REDIRECT = envbool("AIRLOCK_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = envint("AIRLOCK_HSTS_SECONDS", 0)
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Oversized bodies are refused by Django before a view sees them.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("AIRLOCK_MAX_BODY_BYTES", 256 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Uploaded files are device data in transit: private like the rest of var/.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("AIRLOCK_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("AIRLOCK_STATIC_ROOT", str(VAR_DIR / "staticfiles")))
# Whitenoise serves from the finders directly, so `make run` needs no
# collectstatic step; production may collect and set AIRLOCK_COLLECTED_STATIC.
WHITENOISE_USE_FINDERS = not envbool("AIRLOCK_COLLECTED_STATIC", False)
WHITENOISE_AUTOREFRESH = DEBUG
if WHITENOISE_USE_FINDERS:
    # Whitenoise also scans STATIC_ROOT and warns on every start if it is missing.
    try:
        STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"without_traceback": {"()": "broker.middleware.WithoutTraceback"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "console_short": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["without_traceback"],
        },
    },
    "root": {"handlers": ["console"], "level": env("AIRLOCK_LOG_LEVEL", "INFO")},
    "loggers": {
        # Unknown Host headers and oversized bodies: one line, no traceback.
        "django.security": {"handlers": ["console_short"], "level": "WARNING", "propagate": False},
        "asyncssh": {"level": env("AIRLOCK_ASYNCSSH_LOG_LEVEL", "WARNING")},
        "django.channels.server": {"level": "WARNING"},
    },
}
