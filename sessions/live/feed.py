"""The watch feed: what the device sends, published for approvers who follow
a live session read-only (sessions/doors/web/watch.py is the watcher's
socket; the RDP door streams video instead).

`WatchFeed` is an observer of the session core, like the detectors: it
batches output and publishes it on the channel-layer group
`airlock.watch.<session code>`, so a watcher on any web process sees a
session held by any gateway, and keeps the last HISTORY_BYTES for a watcher
who joins. It lives in the core, not in a door, because every door's
sessions are fed and the control channel answers `watch_sync` for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from channels.layers import get_channel_layer

from sessions.live.core import Observer

log = logging.getLogger("airlock.watch")

BATCH_SECONDS = 0.05
# Per batch; beyond it a watcher is told output was skipped (the recording
# keeps everything).
MAX_BATCH_BYTES = 256 * 1024
# Kept per session for a watcher who joins: the recent output.
HISTORY_BYTES = 64 * 1024


def group_name(code: str) -> str:
    return f"airlock.watch.{code}"


class WatchFeed(Observer):
    """Observer publishing the device's output for watchers. O(1) per chunk
    on the data path; the channel-layer send happens in a batch task."""

    def __init__(self, live: Any, layer: Any = None) -> None:
        self.live = live
        self.layer = layer or get_channel_layer()
        self.group = group_name(live.code)
        self.buffer: list[bytes] = []
        self.size = 0
        self.skipped = 0
        self.scheduled = False
        # References to the output chunks, not copies: O(1) per chunk.
        self.history: deque[bytes] = deque()
        self.history_size = 0
        self._last: asyncio.Future | None = None
        live.on_end.append(self._ended)

    def on_output(self, data: bytes, t: float) -> None:
        self.history.append(data)
        self.history_size += len(data)
        while self.history_size - len(self.history[0]) >= HISTORY_BYTES:
            self.history_size -= len(self.history.popleft())
        if self.size + len(data) > MAX_BATCH_BYTES:
            self.skipped += len(data)
        else:
            self.buffer.append(data)
            self.size += len(data)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(BATCH_SECONDS, self._batch_due)

    def _batch_due(self) -> None:
        self.scheduled = False
        self._flush()

    def _flush(self) -> None:
        data = b"".join(self.buffer)
        if self.skipped:
            data += f"\r\n[airlock watch] {self.skipped} bytes of output skipped\r\n".encode()
        self.buffer, self.size, self.skipped = [], 0, 0
        if data:
            self._send({"type": "watch.output", "data": data})

    def watch_sync(self) -> None:
        """A watcher joined: send what is pending, then the history, so the
        watcher can drop everything it received before the history."""
        self._flush()
        data = b"".join(self.history)[-HISTORY_BYTES:]
        cols, rows = getattr(self.live, "size", (80, 24))
        self._send({"type": "watch.history", "data": data, "cols": cols, "rows": rows})

    def _send(self, message: dict[str, Any]) -> None:
        # One at a time, in order: a watcher relies on output sent before the
        # history arriving before it.
        previous = self._last

        async def in_turn() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._publish(message)

        self._last = asyncio.ensure_future(in_turn())
        self._last.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _publish(self, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.layer.group_send(self.group, message), 2)
        except Exception as exc:  # watchers miss output; the session goes on
            log.debug("watch feed of %s: %s", self.live.code, type(exc).__name__)

    async def _ended(self, live: Any) -> None:
        self._flush()
        self._send({"type": "watch.ended", "reason": live.end_reason})
        if self._last is not None:
            await asyncio.wait([self._last], timeout=5)


def install(live: Any) -> WatchFeed | None:
    """Attach a feed to a LiveSession (any front door calls this)."""
    layer = get_channel_layer()
    if layer is None:
        return None
    feed = WatchFeed(live, layer)
    live.observers.append(feed)
    return feed
