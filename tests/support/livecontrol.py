"""A real session core and control channel for live-control tests, without
the network: a LiveSession (sessions/live/core.py) per vendor connection, running
in an event loop in a background thread, attached to a ControlChannel with
the detectors installed — what the gateway does after it has dialled the
device. Tests that use it need `transactional_db` (worker threads write).

    with Harness() as h:
        live = h.open(user, device, grant, source_ip="192.0.2.1")
        h.call(live.input, b"rm -rf /\\r")
        h.wait_ended(live)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sessions.anomalies import detectors
from sessions.live.control import ControlChannel, in_thread_loop
from sessions.live.core import LiveSession
from tests.conftest import stop_thread_loop


class Harness:
    def __init__(self, **control: Any) -> None:
        self.control_options = control
        self.loop: asyncio.AbstractEventLoop | None = None
        self.control: ControlChannel | None = None

    def __enter__(self) -> Harness:
        self.loop, self.thread = in_thread_loop()
        self.control = ControlChannel("test-gateway", **self.control_options)
        self.run(self.control.start())
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for live in list(LiveSession.registry.values()):
                self.run(live.close("test over"))
            self.run(self.control.stop())
        finally:
            stop_thread_loop(self.loop, self.thread, 5)

    def run(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        async def go() -> Any:
            return fn(*args, **kw)

        return self.run(go())

    def open(
        self,
        user: Any,
        device: Any,
        grant: Any,
        *,
        source_ip: str = "192.0.2.10",
        install: bool = True,
    ) -> LiveSession:
        async def go() -> LiveSession:
            live = await LiveSession.open(
                user=user, device=device, grant=grant, source_ip=source_ip, client_kind="native"
            )
            live.closed_with: list[str] = []  # type: ignore[attr-defined]
            live.add_closer(lambda message: live.closed_with.append(message))
            await self.control.attach(live)
            if install:
                await detectors.install(live)
            return live

        return self.run(go())

    def wait_ended(self, live: LiveSession, timeout: float = 15) -> str:
        """Block until the session ended (a hang guard, not a timing assertion)."""
        self.run(asyncio.wait_for(live.wait_closed(), timeout), timeout + 5)
        return live.end_reason

    def settle(self, predicate: Callable[[], bool], timeout: float = 15) -> bool:
        """Poll a condition on the database from the test thread."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
