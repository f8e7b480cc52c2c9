"""Fail closed on control-channel loss: with its Redis gone, a gateway
refuses new sessions at once and ends live ones after the grace period with
"control channel lost"; when Redis is back it accepts again.

The test runs its own redis-server on a free port and stops it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from sessions.live.control import LOST_REASON, ControlChannelLost
from sessions.models import Gateway, Session
from tests.conftest import IN_CI, free_port, need
from tests.support.livecontrol import Harness
from tests.support.sshd import device_sshd, gateway, make_ssh_vendor, vendor  # noqa: F401

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _ping(self.port), "redis-server to accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def _ping(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(predicate: Any, what: str, timeout: float = 30) -> None:
    """A hang guard, not a timing assertion."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    if not shutil.which("redis-server") and not IN_CI:
        need("redis-server is not installed (Debian package redis-server)")
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def world(
    make_vendor_user: Any,
    make_device: Any,
    make_grant: Any,
    settings: Any,
    transactional_db: Any,
    redis_server: RedisProcess,
) -> dict[str, Any]:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    device = make_device("plc-7")
    alice = make_vendor_user("alice")
    grant = make_grant(alice, device, ends_at=timezone.now() + timedelta(hours=2))
    return {"device": device, "alice": alice, "grant": grant, "redis": redis_server}


def test_losing_redis_refuses_new_sessions_and_ends_live_ones_after_the_grace(
    world: dict[str, Any],
) -> None:
    with Harness(probe_seconds=0.2, grace_seconds=5) as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        h.control.check_admission()  # healthy: admits

        world["redis"].stop()

        wait_for(lambda: not h.control.is_healthy, "the gateway to notice the loss")
        with pytest.raises(ControlChannelLost):
            h.control.check_admission()
        with pytest.raises(ControlChannelLost):
            h.open(world["alice"], world["device"], world["grant"], install=False)
        assert not Gateway.objects.get(name="test-gateway").is_accepting
        assert not live.ended  # still inside the grace period

        assert h.wait_ended(live, timeout=30) == LOST_REASON
        assert Session.objects.get(code=live.code).end_reason == LOST_REASON
        assert any(LOST_REASON in m for m in live.closed_with)


def test_a_gateway_accepts_again_when_redis_is_back(world: dict[str, Any]) -> None:
    with Harness(probe_seconds=0.2, grace_seconds=60) as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        world["redis"].stop()
        wait_for(lambda: not h.control.is_healthy, "the gateway to notice the loss")

        world["redis"].start()

        wait_for(lambda: h.control.is_healthy, "the gateway to hear its probe again")
        h.control.check_admission()
        # The gateway admits at once, then writes its row.
        wait_for(
            lambda: Gateway.objects.get(name="test-gateway").is_accepting,
            "the gateway row to say it accepts again",
        )
        assert not live.ended  # the outage was shorter than the grace


def test_after_an_outage_terminate_still_reaches_the_live_session(world: dict[str, Any]) -> None:
    from sessions.live.revocation import revoke

    with Harness(probe_seconds=0.2, grace_seconds=60) as h:
        live = h.open(world["alice"], world["device"], world["grant"], install=False)
        world["redis"].stop()
        wait_for(lambda: not h.control.is_healthy, "the gateway to notice the loss")
        world["redis"].start()
        wait_for(lambda: h.control.is_healthy, "the gateway to hear its probe again")

        # The session's group subscriptions came back with the connection.
        result = revoke(world["grant"], reason="revoked after the outage", by="olga")

        assert result.published
        assert h.wait_ended(live) == "revoked after the outage"


@pytest.mark.sshd
def test_redis_stopped_under_a_real_gateway_refuses_ssh_and_ends_the_live_one(
    request: Any, settings: Any, redis_server: RedisProcess, transactional_db: Any
) -> None:
    from tests.support.netstate import established_to

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    settings.AIRLOCK_CONTROL_PROBE_SECONDS = 0.2
    settings.AIRLOCK_CONTROL_GRACE_SECONDS = 3
    # The gateway (started by the fixture) reads the settings above.
    vendor = request.getfixturevalue("vendor")
    gateway = request.getfixturevalue("gateway")
    device_sshd = request.getfixturevalue("device_sshd")
    live = subprocess.Popen(
        vendor.ssh_args("sleep 600"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: Session.objects.filter(user=vendor.user, ended_at=None).exists(),
        "the session to start",
    )

    redis_server.stop()

    wait_for(lambda: not gateway.gateway.control.is_healthy, "the gateway to notice the loss")
    refused = vendor.ssh("echo hi")
    assert refused.returncode != 0 and b"hi" not in refused.stdout
    assert b"control channel" in refused.stderr
    _, err = live.communicate(timeout=60)  # a hang guard: the grace is 3 s
    assert LOST_REASON in err.decode()
    wait_for(lambda: established_to(device_sshd.port) == 0, "the device side to close")
    # The gateway closes both sides first, then writes the row.
    wait_for(
        lambda: Session.objects.filter(user=vendor.user).exclude(ended_at=None).exists(),
        "the session row to be closed",
    )
    assert Session.objects.get(user=vendor.user).end_reason == LOST_REASON
