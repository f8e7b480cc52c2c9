"""Live watch: an approver follows a live session read-only in the browser.

The session core feeds `WatchFeed` (an observer, like the detectors) with
what the device sends; the feed batches it and publishes it on the channel-
layer group `airlock.watch.<session code>`, so a watcher on any web process
sees a session held by any gateway. `WatchConsumer` is the watcher's
websocket: it checks the user, the OTP-verified session, the Origin and the
watcher's right to see the session itself, then asks the process holding the
session for its recent screen history (`session.watch_sync` on the session's
group; the feed keeps the last HISTORY_BYTES of output and answers with
`watch.history` before any newer output), and relays the live stream from
there. Nothing the watcher sends reaches the device: the socket is read-only
by construction (receive() ignores input).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from broker import audit, oversight
from broker.models import User
from sessions.live.closing import CLOSE_REFUSED
from sessions.live.feed import group_name
from sessions.live.recording import recordings_dir
from sessions.live.websocket import scope_client_ip, websocket_user
from sessions.models import Session

log = logging.getLogger("airlock.watch")

# A holder that does not answer a watch_sync (it may be gone) within this
# long: the watcher starts from the recording file if this machine has it.
SYNC_WAIT_SECONDS = 3.0
REPLAY_BYTES = 256 * 1024


# --- the watcher's side ---------------------------------------------------------


def find_watchable(user: User, code: str) -> Session | None:
    session = (
        Session.objects.visible_to(user).select_related("user", "device").filter(code=code).first()
    )
    # Terminal sessions only: an RDP session is watched as video (sessions/doors/rdp/consumer.py).
    if (
        session is None
        or not session.is_live
        or session.protocol != "ssh"
        or not oversight.may(user, oversight.WATCH, session)
    ):
        return None
    return session


def replay(session: Session) -> tuple[int, int, bytes]:
    """(cols, rows, output so far) from the live recording's spool file."""
    path = recordings_dir() / session.recording
    cols, rows, chunks, size = 80, 24, [], 0
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            end = fh.tell()
            fh.seek(0)
            head = json.loads(fh.readline() or b"{}")
            cols, rows = int(head.get("width", 80)), int(head.get("height", 24))
            if end > REPLAY_BYTES:
                fh.seek(end - REPLAY_BYTES)
                fh.readline()  # a partial line
            for line in fh:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # the line being written
                if isinstance(event, list) and len(event) == 3:
                    if event[1] == "o":
                        data = str(event[2]).encode()
                        chunks.append(data)
                        size += len(data)
                    elif event[1] == "r" and "x" in str(event[2]):
                        w, _, h = str(event[2]).partition("x")
                        if w.isdigit() and h.isdigit():
                            cols, rows = int(w), int(h)
    except (OSError, ValueError):
        pass
    return cols, rows, b"".join(chunks)


class WatchConsumer(AsyncWebsocketConsumer):
    """ws/watch/<session code>/: read-only view of a live session."""

    async def connect(self) -> None:
        self.group = ""
        self.synced = False
        self.session: Session | None = None
        code = str(self.scope["url_route"]["kwargs"]["code"])
        user = await websocket_user(self, target=f"session {code}", what="watch websocket")
        if user is None:
            return
        session = await database_sync_to_async(find_watchable)(user, code)
        if not session:
            await self.close(code=CLOSE_REFUSED)
            return
        self.group = group_name(code)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await database_sync_to_async(audit.record)(
            "session.watch",
            actor=user,
            target=f"session {code}",
            source_ip=scope_client_ip(self.scope),
            data={"device": session.device.slug},
        )
        self.session = session
        await self.channel_layer.group_send(
            f"airlock.session.{code}", {"type": "session.watch_sync"}
        )
        self.fallback = asyncio.get_running_loop().call_later(
            SYNC_WAIT_SECONDS, lambda: asyncio.ensure_future(self._replay_file())
        )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        return  # read-only: nothing a watcher sends goes anywhere

    async def watch_history(self, message: dict[str, Any]) -> None:
        if self.synced:
            return  # another watcher's sync: this one already has its history
        self.synced = True
        self.fallback.cancel()
        await self._start(
            int(message.get("cols") or 80),
            int(message.get("rows") or 24),
            bytes(message.get("data") or b""),
        )

    async def _replay_file(self) -> None:
        """No answer from the holder: start from the recording (embedded
        mode has it on this machine), then follow the live stream."""
        if self.synced or self.session is None:
            return
        self.synced = True
        cols, rows, so_far = await database_sync_to_async(replay)(self.session)
        await self._start(cols, rows, so_far)

    async def _start(self, cols: int, rows: int, history: bytes) -> None:
        await self.send(
            text_data=json.dumps(
                {"type": "status", "state": "watching", "cols": cols, "rows": rows}
            )
        )
        if history:
            await self.send(bytes_data=history)

    async def watch_output(self, message: dict[str, Any]) -> None:
        # Output before the history is part of it: only newer output is sent.
        if self.synced:
            await self.send(bytes_data=bytes(message["data"]))

    async def watch_ended(self, message: dict[str, Any]) -> None:
        await self.send(
            text_data=json.dumps({"type": "ended", "reason": str(message.get("reason", ""))[:300]})
        )
        await self.close(code=4000)

    async def disconnect(self, code: int) -> None:
        fallback = getattr(self, "fallback", None)
        if fallback is not None:
            fallback.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
