"""Factory fixtures shared by every test file.

Markers decide what a test needs: `postgres`, `redis`, `browser`, `sshd`.
Outside CI a missing service skips the test with a reason that says how to
enable it; under CI=true it is a failure (see pytest_runtest_setup).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_otp.oath import totp

from broker.models import (
    ApprovalRule,
    ApproverGroup,
    Credential,
    Device,
    Grant,
    Site,
    TOTPDevice,
    User,
    Vendor,
    Zone,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_PASSWORD = "correct horse battery staple"


def need(reason: str) -> None:
    """Skip for a missing program or service outside CI; under CI=true it is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def redis_url() -> str:
    return (
        os.environ.get("AIRLOCK_TEST_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379/0"
    )


_service_cache: dict[str, str | None] = {}


def _redis_problem() -> str | None:
    """None when Redis answers PING at redis_url(), else why not. An open
    port alone is not enough: something else may be listening there."""
    if "redis" not in _service_cache:
        import redis

        try:
            client = redis.Redis.from_url(redis_url(), socket_timeout=2, socket_connect_timeout=2)
            client.ping()
            client.close()
            _service_cache["redis"] = None
        except Exception as exc:  # any failure means "not usable here"
            _service_cache["redis"] = f"{type(exc).__name__}: {exc}"
    return _service_cache["redis"]


SSHD = "/usr/sbin/sshd"
CHROMIUM = "/usr/bin/chromium"


def _missing_programs(*paths: str) -> list[str]:
    import shutil

    return [
        p for p in paths if not (os.path.isabs(p) and os.access(p, os.X_OK)) and not shutil.which(p)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # No account with a usable password outlives the run (tests/support/sshd.py).
    from tests.support.sshd import lock_device_user

    lock_device_user()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        need(
            "this test needs PostgreSQL: run `make test` (its PostgreSQL pass) or set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/airlock"
        )
    if item.get_closest_marker("redis"):
        problem = _redis_problem()
        if problem:
            need(
                f"this test needs Redis at {redis_url()} ({problem}): start redis-server "
                "(`make test` does) or set AIRLOCK_TEST_REDIS_URL"
            )
    if item.get_closest_marker("sshd"):
        missing = _missing_programs(SSHD, "ssh", "ssh-keygen")
        if missing:
            need(
                f"this test needs OpenSSH ({', '.join(missing)} missing): "
                "apt-get install openssh-server openssh-client (`make test` does as root)"
            )
    if item.get_closest_marker("browser"):
        missing = _missing_programs(CHROMIUM)
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing.append("the playwright package (pip install -r requirements-test.txt)")
        if missing:
            need(
                f"this test needs a browser ({', '.join(missing)} missing): "
                "apt-get install chromium (`make test` does as root)"
            )


# Debian's chromium, started the way it runs on a closed plant network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


@pytest.fixture
def browser(monkeypatch: Any) -> Any:
    """Debian's chromium through Playwright (never a downloaded browser).
    Screenshots go to test-output/screenshots/."""
    # Playwright's sync API runs an event loop in this thread; the test's own
    # ORM calls are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def _fast_hasher(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_live_session_outlives_its_test() -> Iterator[None]:
    """The live-session registries are process-wide. A test that fails
    midway can leave a session bound to an event loop that is gone; forget
    it here so the next test's clean-up does not trip over it."""
    yield
    from sessions.doors.rdp import consumer as rdp_consumer
    from sessions.live.core import LiveSession

    LiveSession.registry.clear()
    rdp_consumer.RDP_SESSIONS.clear()
    rdp_consumer.PARKED.clear()


# --- factories -------------------------------------------------------------


def totp_now(device: TOTPDevice, offset_steps: int = 0) -> str:
    """The code an authenticator app would show for `device` now."""
    code = totp(
        device.bin_key,
        step=device.step,
        t0=device.t0,
        digits=device.digits,
        drift=device.drift + offset_steps,
    )
    return str(code).zfill(device.digits)


@pytest.fixture
def make_vendor(db: Any) -> Callable[..., Vendor]:
    counter = iter(range(1, 10_000))

    def make(name: str | None = None, **kw: Any) -> Vendor:
        return Vendor.objects.create(name=name or f"Vendor {next(counter)}", **kw)

    return make


def _enrol(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)


@pytest.fixture
def make_user(db: Any) -> Callable[..., User]:
    counter = iter(range(1, 10_000))

    def make(username: str | None = None, *, totp: bool = True, **kw: Any) -> User:
        user = User.objects.create_user(
            username=username or f"user{next(counter)}",
            password=TEST_PASSWORD,
            email=kw.pop("email", "") or f"{username or 'u'}{next(counter)}@example.test",
            **kw,
        )
        if totp:
            _enrol(user)
        return user

    return make


@pytest.fixture
def make_vendor_user(
    make_user: Callable[..., User], make_vendor: Callable[..., Vendor]
) -> Callable[..., User]:
    def make(username: str | None = None, vendor: Vendor | None = None, **kw: Any) -> User:
        return make_user(username, vendor=vendor or make_vendor(), **kw)

    return make


@pytest.fixture
def make_approver(make_user: Callable[..., User]) -> Callable[..., User]:
    def make(
        username: str | None = None, groups: list[ApproverGroup] | None = None, **kw: Any
    ) -> User:
        user = make_user(username, **kw)
        for group in groups or []:
            group.members.add(user)
        return user

    return make


@pytest.fixture
def make_group(db: Any) -> Callable[..., ApproverGroup]:
    def make(name: str) -> ApproverGroup:
        return ApproverGroup.objects.get_or_create(name=name)[0]

    return make


@pytest.fixture
def make_zone(db: Any) -> Callable[..., Zone]:
    counter = iter(range(1, 10_000))

    def make(*, rules: list[tuple[ApproverGroup, int]] = (), **kw: Any) -> Zone:
        n = next(counter)
        site = (
            kw.pop("site", None)
            or Site.objects.get_or_create(
                slug="plant", defaults={"name": "Plant", "timezone": "Europe/Berlin"}
            )[0]
        )
        zone = Zone.objects.create(
            site=site, name=kw.pop("name", f"Zone {n}"), slug=kw.pop("slug", f"zone-{n}"), **kw
        )
        for group, count in rules:
            ApprovalRule.objects.create(zone=zone, group=group, count=count)
        return zone

    return make


@pytest.fixture
def make_device(make_zone: Callable[..., Zone]) -> Callable[..., Device]:
    counter = iter(range(1, 10_000))

    def make(slug: str | None = None, **kw: Any) -> Device:
        n = next(counter)
        kw.setdefault("ssh_host", "127.0.0.1")
        zone = kw.pop("zone", None) or make_zone()
        return Device.objects.create(
            slug=slug or f"plc-{n}", name=kw.pop("name", f"PLC {n}"), zone=zone, **kw
        )

    return make


@pytest.fixture
def make_grant(db: Any) -> Callable[..., Grant]:
    def make(
        user: User,
        device: Device,
        *,
        starts_at: Any = None,
        ends_at: Any = None,
        protocols: list[str] | None = None,
        **kw: Any,
    ) -> Grant:
        now = timezone.now()
        starts_at = starts_at or now - timedelta(minutes=5)
        ends_at = ends_at or now + timedelta(hours=1)
        return Grant.objects.create(
            user=user,
            device=device,
            starts_at=starts_at,
            ends_at=ends_at,
            protocols=protocols or ["ssh"],
            **kw,
        )

    return make


@pytest.fixture
def verified_client(client: Any) -> Callable[[User], Any]:
    """A test client logged in as `user` with an OTP-verified session and a
    fresh step-up (as if the user had just typed a code)."""
    import time

    def login(user: User) -> Any:
        device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or _enrol(user)
        client.force_login(user)
        session = client.session
        session["otp_device_id"] = device.persistent_id
        session["airlock_otp_at"] = time.time()
        session["airlock_started_at"] = time.time()
        session.save()
        return client

    return login


def stop_thread_loop(loop: Any, thread: Any, timeout: float = 10) -> None:
    """Stop an event loop that runs in `thread`, then close it here, so it
    is not closed later by the garbage collector in the middle of another
    test (channels-redis flushes its layers when a loop closes)."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if not thread.is_alive():
        loop.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that is free now, for a server a test starts. It is picked
    below the kernel's ephemeral range, so no outgoing connection of this
    machine can take it between this call and the server's bind."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(min(20000, low - 1000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = [
    "TEST_PASSWORD",
    "totp_now",
    "free_port",
    "stop_thread_loop",
    "redis_url",
    "IN_CI",
    "Credential",
    "settings",
]
