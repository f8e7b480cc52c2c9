"""The control channel: how a process that holds live sessions (an SSH
gateway, a web process with terminal websockets) hears `terminate`, proves it
is alive, and fails closed when it can no longer hear.

One `ControlChannel` per process. The front end calls:

    control = ControlChannel("gw-host-1234")
    await control.start()                 # heartbeat + probe tasks
    control.check_admission()             # before a new session: raises ControlChannelLost
    await control.attach(live_session)    # subscribe it to its five groups
    await control.detach(live_session)    # when it ends
    await control.stop()

A LiveSession is subscribed (one channel per session) to
`airlock.session|user|vendor|device|grant.<code>`; a `session.terminate`
message on any of them calls `live.terminate(reason, by)`; attach() also
registers detach() in `live.on_end`, so a session that ends for any other
reason leaves its groups.

Loss detection is end to end and works for any channel layer: every
`probe_seconds` the process sends a ping to its own group and waits for it to
come back through the layer. With Redis down the ping never returns; after
`probe_seconds * 3` without one the channel counts as lost: new sessions are
refused at once, and if it is still lost after AIRLOCK_CONTROL_GRACE_SECONDS
(default 30) every live session ends with "control channel lost". A plant
prefers a dropped maintenance session to one nobody can stop.

`publish()` is the sending side used by revoke().
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import BigIntegerField, Case, F, Value, When
from django.utils import timezone

from broker.access import AccessDenied, authorize
from sessions.live import feed, hooks
from sessions.models import Gateway, Session

log = logging.getLogger(__name__)

LOST_REASON = "control channel lost"
PUBLISH_TIMEOUT = 5.0
# How long stop() waits for its cancelled loops before it goes on without them.
STOP_TIMEOUT = 5.0

# The event loop of this process's ControlChannel. Sync callers in other
# threads publish through it, because the in-memory layer's queues belong to
# that loop (and the Redis layer then reuses its connection).
_home_loop: asyncio.AbstractEventLoop | None = None


class ControlChannelLost(Exception):
    """Raised by check_admission(): this process cannot hear terminate
    messages, so it must not start a session."""


class Live(Protocol):
    """What the control channel needs from a LiveSession (sessions/live/core.py)."""

    session: Any  # the Session row

    def terminate(self, reason: str, by: str | None = None) -> Any: ...


def setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


# --- sending ------------------------------------------------------------------


def publish(groups: Iterable[str], message: dict[str, Any]) -> None:
    """Send `message` to every group. Synchronous; raises on failure."""
    groups = list(groups)
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")

    async def send_all() -> None:
        for group in groups:
            await asyncio.wait_for(layer.group_send(group, message), PUBLISH_TIMEOUT)

    loop = _home_loop
    if loop is not None and loop.is_running() and not loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("publish() blocks; call it through database_sync_to_async")
        asyncio.run_coroutine_threadsafe(send_all(), loop).result(PUBLISH_TIMEOUT * len(groups) + 1)
        return
    async_to_sync(send_all)()


def vendor_reason(message: dict[str, Any]) -> tuple[str, str]:
    """(reason, by) from a terminate message, bounded; the core shows the
    vendor "Session ended: <reason> (by <by>)"."""
    reason = str(message.get("reason") or "no reason given")[:300]
    by = str(message.get("by") or "system")[:150]
    return reason, by


# --- receiving ---------------------------------------------------------------


class ControlChannel:
    def __init__(
        self,
        name: str | None = None,
        *,
        layer: Any = None,
        grace_seconds: float | None = None,
        probe_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
    ) -> None:
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.layer = layer
        self.grace = (
            grace_seconds
            if grace_seconds is not None
            else setting("AIRLOCK_CONTROL_GRACE_SECONDS", 30)
        )
        self.probe = (
            probe_seconds
            if probe_seconds is not None
            else setting("AIRLOCK_CONTROL_PROBE_SECONDS", 2)
        )
        self.heartbeat = (
            heartbeat_seconds
            if heartbeat_seconds is not None
            else setting("AIRLOCK_HEARTBEAT_SECONDS", 10)
        )
        self.lost_since: float | None = None
        self.last_pong = time.monotonic()
        self._pings_sent = 0
        self._live: dict[Any, tuple[str, list[str], asyncio.Task]] = {}
        self._tasks: list[asyncio.Task] = []
        self._channel = ""
        self._group = f"airlock.gateway.{self.name.replace(':', '-')}"[:99]
        self._grace_fired = False

    # -- lifecycle

    async def start(self) -> None:
        global _home_loop
        self.layer = self.layer or get_channel_layer()
        _home_loop = asyncio.get_running_loop()
        self._channel = await self.layer.new_channel("airlock.control.")
        await self.layer.group_add(self._group, self._channel)
        await database_sync_to_async(_register_gateway)(self.name)
        self.last_pong = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._pong_loop(), name="airlock-control-pong"),
            asyncio.create_task(self._probe_loop(), name="airlock-control-probe"),
            asyncio.create_task(self._heartbeat_loop(), name="airlock-heartbeat"),
        ]

    async def stop(self) -> None:
        global _home_loop
        tasks = [*self._tasks, *(t for _, _, t in self._live.values())]
        for task in tasks:
            task.cancel()
        # Bounded: a cancelled receive on a Redis that is down unsubscribes
        # on its way out, and that can wait on the dead connection for long.
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        self._tasks = []
        self._live.clear()
        try:
            await asyncio.wait_for(self.layer.group_discard(self._group, self._channel), 2)
        except Exception:
            pass
        await database_sync_to_async(_gateway_stopped)(self.name)
        if _home_loop is asyncio.get_running_loop():
            _home_loop = None

    # -- admission

    @property
    def is_healthy(self) -> bool:
        return self.lost_since is None

    def check_admission(self) -> None:
        if not self.is_healthy:
            raise ControlChannelLost(
                "Airlock cannot reach its control channel; new sessions are refused until it "
                "is back"
            )

    # -- sessions

    async def attach(self, live: Live, groups: list[str] | None = None) -> None:
        """Subscribe `live` to its groups. Raises (and the front end must
        refuse the session) if the layer cannot subscribe it."""
        self.check_admission()
        if groups is None:
            groups = getattr(live, "group_names", None)
            if not isinstance(groups, list):
                groups = await database_sync_to_async(live.session.group_names)()
        channel = await self.layer.new_channel("airlock.live.")
        for group in groups:
            await asyncio.wait_for(self.layer.group_add(group, channel), PUBLISH_TIMEOUT)
        task = asyncio.create_task(self._session_loop(live, channel))
        self._live[live] = (channel, groups, task)
        on_end = getattr(live, "on_end", None)
        if isinstance(on_end, list):
            on_end.append(self.detach)

    async def detach(self, live: Live) -> None:
        entry = self._live.pop(live, None)
        if entry is None:
            return
        channel, groups, task = entry
        if task is not asyncio.current_task():
            task.cancel()
        for group in groups:
            try:
                await asyncio.wait_for(self.layer.group_discard(group, channel), 2)
            except Exception:  # the layer may be the thing that is down
                pass

    @property
    def live_sessions(self) -> list[Live]:
        return list(self._live)

    async def _session_loop(self, live: Live, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            if message.get("type") == "session.terminate":
                reason, by = vendor_reason(message)
                await _call(live.terminate, reason, by)
                await self.detach(live)
                return
            if message.get("type") == "session.watch_sync":
                # A watcher joined (sessions/live/feed.py): the feed sends it the
                # recent screen history from here, wherever the watcher runs.
                for observer in list(getattr(live, "observers", [])):
                    sync = getattr(observer, "watch_sync", None)
                    if sync is not None:
                        sync()

    # -- liveness

    async def _pong_loop(self) -> None:
        while True:
            message = await self.layer.receive(self._channel)
            if message.get("type") == "gateway.ping":
                self.last_pong = time.monotonic()
                if self.lost_since is not None:
                    log.warning("control channel is back; accepting sessions again")
                    self.lost_since = None
                    self._grace_fired = False
                    await database_sync_to_async(_set_accepting)(self.name, True)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe)
            try:
                self._pings_sent += 1
                await asyncio.wait_for(
                    self.layer.group_send(
                        self._group, {"type": "gateway.ping", "n": self._pings_sent}
                    ),
                    self.probe,
                )
            except Exception as exc:
                log.debug("control probe failed: %s", type(exc).__name__)
            now = time.monotonic()
            if self.lost_since is None and now - self.last_pong > self.probe * 3:
                self.lost_since = now
                log.error(
                    "control channel lost; refusing new sessions, live ones end in %ss", self.grace
                )
                await _quietly(database_sync_to_async(_set_accepting), self.name, False)
            if (
                self.lost_since is not None
                and not self._grace_fired
                and now - self.lost_since >= self.grace
            ):
                self._grace_fired = True
                await self._end_all(LOST_REASON)

    async def _end_all(self, reason: str) -> None:
        for live in list(self._live):
            await _quietly(_call, live.terminate, reason)
            await _quietly(self.detach, live)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            beats = [
                (live.session.pk, getattr(live, "bytes_in", None), getattr(live, "bytes_out", None))
                for live in self._live
            ]
            await _quietly(database_sync_to_async(beat), self.name, beats)


async def _call(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _quietly(fn: Any, *args: Any) -> None:
    try:
        await _call(fn, *args)
    except Exception:
        log.exception("control channel housekeeping failed")


# --- what a front end calls ---------------------------------------------------


async def watch(control: ControlChannel, live: Any) -> bool:
    """Put a freshly opened LiveSession under live control: subscribe it to
    its groups, install the detectors, and re-check authorize() (closing the
    window between the gateway's decision and the subscription). If any of
    that fails or refuses, the session ends at once; returns False then."""
    try:
        await control.attach(live)
        # The detectors (registered by sessions/apps.py) attach here.
        for hook in hooks.session_opened:
            result = hook(live)
            if inspect.isawaitable(result):
                await result
        # Approvers may follow it read-only (sessions/live/feed.py).
        feed.install(live)
        # A revocation published after authorize() but before the attach
        # above reached no one: ask once more now that the session listens.
        denial = await database_sync_to_async(still_refused)(live.session.pk)
    except Exception as exc:
        log.error(
            "session %s could not be put under live control: %s",
            getattr(live, "code", "?"),
            type(exc).__name__,
        )
        reason = (
            str(exc)
            if isinstance(exc, ControlChannelLost)
            else "Airlock could not put the session under live control"
        )
        await _quietly(_call, live.terminate, reason)
        return False
    if denial:
        await _quietly(_call, live.terminate, denial)
        return False
    return True


def still_refused(session_pk: int) -> str:
    """authorize() again for a session that has just started: the refusal's
    sentence, or "" while it is still allowed."""
    session = Session.objects.select_related("user__vendor", "device__zone").get(pk=session_pk)
    try:
        authorize(
            session.user,
            session.device,
            protocol=session.protocol,
            at=timezone.now(),
            source_ip=session.source_ip,
        )
    except AccessDenied as denied:
        return str(denied)
    return ""


# Denials that are themselves signals (sessions/anomalies/detectors.py).
OUT_OF_WINDOW_REASONS = {"not_yet", "expired"}


def signal_denial(spawn: Any, user: Any, device: Any, denial: Any, source_ip: str | None) -> None:
    """A connection refused for being outside its window raises a signal."""
    if user is None or device is None or getattr(denial, "reason", "") not in OUT_OF_WINDOW_REASONS:
        return
    for hook in hooks.refused_outside_window:
        spawn(database_sync_to_async(hook)(user, device, str(denial), source_ip))


def signal_device_error(spawn: Any, device: Any, error: Any, source_ip: str | None) -> None:
    """A device that presents another host key than the pinned one raises a signal."""
    if device is None or getattr(error, "reason", "") != "host_key_mismatch":
        return
    for hook in hooks.host_key_changed:
        spawn(database_sync_to_async(hook)(device, str(error), source_ip))


# --- database side (plain sync functions; tests call them directly) ----------


def _register_gateway(name: str) -> None:
    now = timezone.now()
    Gateway.objects.update_or_create(
        name=name,
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "seen_at": now,
            "stopped_at": None,
            "is_accepting": True,
        },
    )


def _gateway_stopped(name: str) -> None:
    Gateway.objects.filter(name=name).update(stopped_at=timezone.now(), is_accepting=False)


def _set_accepting(name: str, accepting: bool) -> None:
    Gateway.objects.filter(name=name).update(is_accepting=accepting, seen_at=timezone.now())


def beat(name: str, sessions: list[tuple[int, int | None, int | None]]) -> None:
    """One heartbeat: the gateway and each session it holds are alive.

    One UPDATE per chunk of sessions, not one per session: a gateway holding
    a thousand sessions beats without a thousand round trips."""
    now = timezone.now()
    # A gateway the sweep had given up on is evidently alive again.
    Gateway.objects.filter(name=name).update(seen_at=now, stopped_at=None)
    for start in range(0, len(sessions), 500):
        chunk = sessions[start : start + 500]
        changes: dict[str, Any] = {"last_seen_at": now, "gateway_id": name}
        for field, index in (("bytes_in", 1), ("bytes_out", 2)):
            whens = [
                When(pk=row[0], then=Value(row[index])) for row in chunk if row[index] is not None
            ]
            if whens:
                changes[field] = Case(*whens, default=F(field), output_field=BigIntegerField())
        Session.objects.filter(pk__in=[row[0] for row in chunk], ended_at=None).update(**changes)


def in_thread_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """An event loop running in a daemon thread (for the embedded default
    and tests: a sync process that still needs a ControlChannel)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="airlock-control", daemon=True)
    thread.start()
    return loop, thread
