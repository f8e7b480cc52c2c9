"""The production shape for the browser terminal: this test process is the
web process holding a terminal websocket (real session core, real sshd as
the device) and a separate process revokes the grant; the two share only the
database and Redis (channels-redis pub/sub). The terminal ends with the
reason and the device side is closed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from sessions.models import Session
from tests.conftest import redis_url
from tests.support.browser_session import session_cookie
from tests.support.sshd import device_sshd, pin_device  # noqa: F401  (fixture)
from tests.test_cross_process_revocation import database_url
from tests.test_terminal_consumer import (
    closed,
    communicator,
    messages,
    open_terminal,
    read_until,
    run,
    text_of,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def revoke_in_another_process(grant_code: str, reason: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url(),
        DJANGO_SETTINGS_MODULE="broker.settings",
    )
    code = (
        "from broker.models import Grant\n"
        "from sessions.live.revocation import revoke\n"
        f"result = revoke(Grant.objects.get(code={grant_code!r}), reason={reason!r}, "
        "by='olga')\n"
        "print('published' if result.published else 'NOT published', result.errors)\n"
    )
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.redis
def test_revocation_from_another_process_ends_the_browser_terminal(
    settings: Any, device_sshd, make_vendor_user, make_device, make_grant
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url()]},
        }
    }
    user = make_vendor_user("vera")
    device = make_device("filler-plc")
    pin_device(device, device_sshd)
    grant = make_grant(user, device)
    cookie = session_cookie(user)

    async def scenario() -> tuple[list, subprocess.CompletedProcess]:
        comm = communicator(grant, cookie)
        frames = await open_terminal(comm)
        await comm.send_to(bytes_data=b"echo up-$((6*7))\r")
        frames += await read_until(comm, lambda fs: "up-42" in text_of(fs))
        done = await asyncio.to_thread(
            revoke_in_another_process, str(grant.code), "vendor contract suspended"
        )
        frames += await read_until(comm, closed, timeout=30)
        return frames, done

    frames, done = run(scenario())
    assert "published" in done.stdout, done.stdout + done.stderr
    final = messages(frames)[-1]
    assert final["type"] == "ended"
    assert final["reason"] == "vendor contract suspended (by olga)"
    session = Session.objects.get(user=user)
    assert session.end_reason == "vendor contract suspended"
    assert session.ended_at is not None


def test_terminal_sessions_of_the_web_process_are_heartbeaten(
    settings: Any, device_sshd, make_vendor_user, make_device, make_grant
):
    """The sweep closes rows nobody heartbeats; the web process's control
    channel heartbeats the terminals it holds like a gateway does."""
    settings.AIRLOCK_HEARTBEAT_SECONDS = 0.2
    user = make_vendor_user("vera")
    device = make_device("filler-plc")
    pin_device(device, device_sshd)
    grant = make_grant(user, device)
    cookie = session_cookie(user)

    async def scenario() -> Any:
        comm = communicator(grant, cookie)
        await open_terminal(comm)
        first = await database_sync_to_async(lambda: Session.objects.get(user=user).last_seen_at)()
        for _ in range(100):
            await asyncio.sleep(0.1)
            seen = await database_sync_to_async(
                lambda: Session.objects.get(user=user).last_seen_at
            )()
            if seen > first:
                break
        await comm.disconnect()
        return first, seen

    first, seen = run(scenario())
    assert seen > first
    from sessions.models import Gateway

    assert Gateway.objects.filter(name__startswith="web-").exists()
