"""revoke(): the database first, the audit event, then `session.terminate`
on the channel-layer group of what was revoked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from broker.access import AccessDenied, authorize
from broker.models import AuditEvent, Grant, Lock
from sessions.live.revocation import revoke
from sessions.models import Session
from tests.conftest import free_port, redis_url, stop_thread_loop

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def pubsub(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [url]},
        }
    }


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = IN_MEMORY
    return get_channel_layer()


def subscribe(layer: Any, group: str) -> str:
    async def go() -> str:
        channel = await layer.new_channel("test.")
        await layer.group_add(group, channel)
        return channel

    return async_to_sync(go)()


def receive(layer: Any, channel: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        import asyncio

        return await asyncio.wait_for(layer.receive(channel), 10)

    return async_to_sync(go)()


@pytest.fixture
def grant(make_vendor_user: Any, make_device: Any, make_grant: Any) -> Grant:
    return make_grant(make_vendor_user("alice"), make_device("plc-7"))


def test_revoking_a_grant_writes_it_audits_it_and_publishes_terminate_to_its_group(
    grant: Grant, make_approver: Any, in_memory_layer: Any
) -> None:
    approver = make_approver("olga")
    channel = subscribe(in_memory_layer, f"airlock.grant.{grant.code}")

    result = revoke(grant, reason="work order cancelled", by=approver, source_ip="10.0.0.9")

    grant.refresh_from_db()
    assert result.changed and result.published
    assert grant.revoked_at is not None and grant.revoked_by == approver
    assert grant.revoke_reason == "work order cancelled"
    event = AuditEvent.objects.get(action="grant.revoked")
    assert event.actor == "olga" and event.target == f"grant:{grant.code}"
    assert event.source_ip == "10.0.0.9"
    assert receive(in_memory_layer, channel) == {
        "type": "session.terminate",
        "reason": "work order cancelled",
        "by": "olga",
    }


def test_a_revoked_grant_no_longer_authorizes(grant: Grant, in_memory_layer: Any) -> None:
    revoke(grant, reason="done", by=grant.user)
    with pytest.raises(AccessDenied) as denied:
        authorize(grant.user, grant.device, protocol="ssh", at=timezone.now(), source_ip=None)
    assert denied.value.reason == "revoked"


def test_revoking_twice_changes_and_audits_once_but_publishes_again(
    grant: Grant, in_memory_layer: Any
) -> None:
    first = revoke(grant, reason="first", by="system")
    channel = subscribe(in_memory_layer, f"airlock.grant.{grant.code}")
    second = revoke(grant, reason="second", by="system")

    grant.refresh_from_db()
    assert first.changed and not second.changed
    assert grant.revoke_reason == "first"
    assert AuditEvent.objects.filter(action="grant.revoked").count() == 1
    assert receive(in_memory_layer, channel)["reason"] == "second"


def test_locking_a_user_creates_an_expiring_lock_and_publishes_to_the_user_group(
    grant: Grant, in_memory_layer: Any
) -> None:
    user = grant.user
    channel = subscribe(in_memory_layer, f"airlock.user.{user.code}")
    until = timezone.now() + timedelta(hours=1)

    result = revoke(user, reason="suspicious command", by="detector:command_rule", until=until)

    lock = Lock.objects.get()
    assert result.lock == lock and lock.user == user and lock.expires_at == until
    assert AuditEvent.objects.get(action="lock.created").target == f"lock:{lock.code}"
    assert receive(in_memory_layer, channel)["by"] == "detector:command_rule"
    with pytest.raises(AccessDenied) as denied:
        authorize(user, grant.device, protocol="ssh", at=timezone.now(), source_ip=None)
    assert denied.value.reason == "locked"


@pytest.mark.parametrize("what", ["vendor", "device", "grant"])
def test_each_lock_target_publishes_to_its_own_group(
    what: str, grant: Grant, in_memory_layer: Any
) -> None:
    target = {"vendor": grant.user.vendor, "device": grant.device, "grant": grant}[what]
    channel = subscribe(in_memory_layer, f"airlock.{what}.{target.code}")

    revoke(target, reason="locked by test", by="system", lock=True)

    assert Lock.objects.get().target_label.startswith(what)
    assert receive(in_memory_layer, channel)["reason"] == "locked by test"
    grant.refresh_from_db()
    assert grant.revoked_at is None  # a lock on a grant does not revoke it


def test_terminating_one_session_publishes_only_to_that_session(
    grant: Grant, in_memory_layer: Any
) -> None:
    session = Session.objects.create(user=grant.user, device=grant.device, grant=grant)
    channel = subscribe(in_memory_layer, f"airlock.session.{session.code}")

    result = revoke(session, reason="please stop", by="olga")

    assert result.groups == [f"airlock.session.{session.code}"]
    assert receive(in_memory_layer, channel)["by"] == "olga"
    assert AuditEvent.objects.filter(
        action="session.terminated", target=f"session:{session.code}"
    ).exists()
    assert not Lock.objects.exists()


def test_a_lock_that_expires_in_the_past_is_refused_and_nothing_is_written(
    grant: Grant, in_memory_layer: Any
) -> None:
    with pytest.raises(ValueError):
        revoke(grant.user, reason="x", until=timezone.now() - timedelta(minutes=1))
    assert not Lock.objects.exists()
    assert not AuditEvent.objects.filter(action="lock.created").exists()


def test_revocation_is_written_even_when_the_channel_layer_is_down(
    grant: Grant, settings: Any
) -> None:
    settings.CHANNEL_LAYERS = pubsub(f"redis://127.0.0.1:{free_port()}/0")

    result = revoke(grant, reason="revoked while redis is down", by="system")

    grant.refresh_from_db()
    assert grant.revoked_at is not None
    assert not result.published
    assert AuditEvent.objects.filter(action="revocation.publish_failed").exists()


@pytest.mark.redis
def test_revoke_publishes_through_real_redis(grant: Grant, settings: Any) -> None:
    settings.CHANNEL_LAYERS = pubsub(redis_url())
    import asyncio

    from sessions.live.control import in_thread_loop

    # The subscriber lives in its own loop and thread, as a gateway would.
    loop, thread = in_thread_loop()
    layer = get_channel_layer()
    try:
        channel = asyncio.run_coroutine_threadsafe(layer.new_channel("test."), loop).result(5)
        asyncio.run_coroutine_threadsafe(
            layer.group_add(f"airlock.device.{grant.device.code}", channel), loop
        ).result(5)
        waiting = asyncio.run_coroutine_threadsafe(layer.receive(channel), loop)

        result = revoke(grant.device, reason="device under investigation", by="olga")

        assert result.published
        assert waiting.result(10) == {
            "type": "session.terminate",
            "reason": "device under investigation",
            "by": "olga",
        }
    finally:
        try:
            asyncio.run_coroutine_threadsafe(layer.flush(), loop).result(5)
        finally:
            stop_thread_loop(loop, thread, 5)
