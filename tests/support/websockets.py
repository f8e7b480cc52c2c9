"""Driving the browser doors' websockets in-process (terminal, watch, RDP)."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings


def socket(
    path: str,
    cookie: str | None,
    *,
    host: bytes = b"127.0.0.1:8000",
    origin: bytes | None = b"http://127.0.0.1:8000",
    subprotocols: list[str] | None = None,
) -> WebsocketCommunicator:
    """A websocket to the real ASGI app, signed in with `cookie` when given."""
    from broker.asgi import application

    headers = [(b"host", host)]
    if origin:
        headers.append((b"origin", origin))
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols)


def run(coro: Any) -> Any:
    """Run a scenario on a fresh loop; afterwards close every live session a
    failed scenario left open and let ending ones write their rows, so the
    next test starts with an empty registry."""

    async def go() -> Any:
        from sessions.doors.web import terminal
        from sessions.live.core import LiveSession

        try:
            return await coro
        finally:
            for live in list(LiveSession.registry.values()):
                if not live.ended:
                    await asyncio.wait_for(live.close("test over"), 30)
                await asyncio.wait_for(live.wait_closed(), 20)
            await terminal.stop_web_control()

    return asyncio.run(go())
