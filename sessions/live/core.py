"""The session core: one LiveSession per vendor connection, whatever the door.

Front ends (the SSH gateway, the browser terminal) are thin adapters: they
authenticate the vendor, ask `broker.access.authorize()`, dial the device
with `dial_device()`, then open a LiveSession and pass every byte through it
(`input()` from the vendor, `output()` from the device). The core records
(asciicast v2), counts bytes, indexes commands, feeds observers (the live-
control detectors) and obeys `terminate(reason)`: both sides are closed at
once and the vendor is told why.

Invariants:
- Nothing on the data path touches the database or blocks: database work is
  queued to threads (database_sync_to_async) and the recording is buffered
  and flushed once a second.
- A LiveSession ends exactly once (Session.close is a compare-and-set); its
  recording's SHA-256 goes into the row and the audit chain.
- Any failure to record, or in an observer, ends the session (fail closed).
- The session ends at the grant's `ends_at` by its own timer, with notices
  five minutes and one minute before.

Interface for live control (sessions/live/revocation.py, sessions/anomalies/detectors.py):
- `LiveSession.registry` maps str(session code) to the live sessions of this
  process; `group_names` lists the channel-layer groups that address it.
- `await live.terminate(reason, by=None)`; `live.set_ends_at(at)` when the
  grant's window changes under a live session.
- `live.observers`: objects with on_input/on_output/on_command/on_file
  (data/text, t) methods; they call back `live.signal(kind, severity, detail)`.
- `live.on_end`: callbacks run (with the LiveSession) once it has ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import asyncssh
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from broker import audit
from broker.models import Credential, Device, Grant, User
from broker.vault import VaultError, open_secret
from sessions.live.recording import (
    AsciicastWriter,
    LineEditor,
    RecordingError,
    recording_name,
    recordings_dir,
    store_finished,
)
from sessions.models import Command, FileTransfer, Session

log = logging.getLogger("airlock.sessions")

# Offered on both legs, AES-GCM first: on x86 with AES-NI it costs about half
# of chacha20-poly1305 per byte, which is most of the relay's CPU.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
# Compression off on both legs: it costs CPU and lets a peer inflate a small
# packet into a large buffer.
COMPRESSION = ("none",)
WARNINGS_BEFORE_END = (timedelta(minutes=5), timedelta(minutes=1))


def gateway_id() -> str:
    return getattr(settings, "GATEWAY_ID", "") or f"{socket.gethostname()}:{os.getpid()}"


# --- the device side ------------------------------------------------------------


class DeviceError(Exception):
    """The device could not be reached or logged in to. str() is safe to show
    the vendor; `reason` is a short code for the audit trail."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DeviceTarget:
    """Everything needed to log in to one device. Holds a secret: never log it."""

    slug: str
    host: str
    port: int
    host_key: str
    username: str
    kind: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"<DeviceTarget {self.username}@{self.host}:{self.port} ({self.kind}) secret=***>"


def load_device_target(device: Device) -> DeviceTarget:
    """Read the device's endpoint, pinned key and vaulted SSH credential (sync)."""
    if not device.ssh_host:
        raise DeviceError("no_endpoint", f"{device.slug} has no SSH endpoint configured")
    if not device.ssh_host_key.strip():
        raise DeviceError(
            "host_key_not_pinned",
            f"the host key of {device.slug} is not pinned yet; "
            "ask an administrator to run `manage.py pinhostkey`",
        )
    credential = Credential.objects.filter(device=device, protocol="ssh").first()
    if credential is None:
        raise DeviceError("no_credential", f"Airlock holds no SSH credential for {device.slug}")
    try:
        secret = open_secret(credential)
    except VaultError:
        log.error("the vaulted SSH credential of %s cannot be opened", device.slug)
        raise DeviceError(
            "credential_unreadable", f"Airlock cannot open the credential for {device.slug}"
        )
    return DeviceTarget(
        slug=device.slug,
        host=device.ssh_host,
        port=device.ssh_port,
        host_key=device.ssh_host_key.strip(),
        username=credential.username,
        kind=credential.kind,
        secret=secret,
    )


def client_options(**overrides: Any) -> dict[str, Any]:
    """asyncssh client options shared by every dial to a device: no user
    config, no agent, our cipher order, bounded timeouts."""
    options: dict[str, Any] = {
        "config": None,
        "agent_path": None,
        "agent_forwarding": False,
        "encryption_algs": list(CIPHERS),
        "compression_algs": list(COMPRESSION),
        "connect_timeout": getattr(settings, "GATEWAY_DEVICE_CONNECT_TIMEOUT", 10),
        "login_timeout": getattr(settings, "GATEWAY_DEVICE_LOGIN_TIMEOUT", 15),
        "keepalive_interval": 30,
        "keepalive_count_max": 3,
    }
    options.update(overrides)
    return options


async def dial_device(target: DeviceTarget) -> asyncssh.SSHClientConnection:
    """Log in to the device with the vaulted credential, accepting only the
    pinned host key. Raises DeviceError with a sentence for the vendor."""
    try:
        pinned = asyncssh.import_public_key(target.host_key)
    except (asyncssh.KeyImportError, ValueError):
        raise DeviceError("host_key_invalid", f"the pinned host key of {target.slug} is unreadable")
    auth: dict[str, Any]
    if target.kind == Credential.Kind.PRIVATE_KEY:
        try:
            key = asyncssh.import_private_key(target.secret)
        except (asyncssh.KeyImportError, ValueError):
            raise DeviceError(
                "credential_invalid", f"the vaulted key for {target.slug} is unreadable"
            )
        auth = {"client_keys": [key], "password": None, "preferred_auth": "publickey"}
    else:
        auth = {
            "client_keys": None,
            "password": target.secret,
            "preferred_auth": "password,keyboard-interactive",
        }
    try:
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.username,
            known_hosts=([pinned], [], []),
            server_host_key_algs=pinned.sig_algorithms
            and [alg.decode() for alg in pinned.sig_algorithms],
            **auth,
            **client_options(),
        )
    except asyncssh.HostKeyNotVerifiable:
        raise DeviceError(
            "host_key_mismatch",
            f"{target.slug} presented a host key that does not match the pinned one; "
            "Airlock refused to log in",
        )
    except asyncssh.PermissionDenied:
        raise DeviceError(
            "device_auth_failed", f"{target.slug} refused Airlock's vaulted credential"
        )
    except TimeoutError:
        raise DeviceError("device_timeout", f"{target.slug} did not answer in time")
    except asyncssh.Error as exc:
        raise DeviceError(
            "device_protocol", f"the connection to {target.slug} failed ({exc.reason})"
        )
    except OSError as exc:
        raise DeviceError(
            "device_unreachable",
            f"{target.slug} is unreachable ({exc.strerror or 'connection failed'})",
        )


# --- database work (plain sync functions; tests call them directly) ------------


@transaction.atomic
def open_session_row(
    *,
    user: User,
    device: Device,
    grant: Grant,
    source_ip: str | None,
    client_kind: str,
    protocol: str = "ssh",
) -> Session:
    now = timezone.now()
    session = Session(
        user=user,
        device=device,
        grant=grant,
        protocol=protocol,
        client_kind=client_kind,
        source_ip=source_ip,
        started_at=now,
        last_seen_at=now,
        gateway_id=gateway_id(),
    )
    session.recording = recording_name(str(session.code), now)
    session.save()
    audit.record(
        "session.start",
        actor=user,
        target=f"session {session.code}",
        source_ip=source_ip,
        data={
            "device": device.slug,
            "grant": str(grant.code),
            "client": client_kind,
            "gateway": session.gateway_id,
        },
    )
    # Resolve the relations group_names() needs while we are in a thread.
    session.group_list = session.group_names()  # type: ignore[attr-defined]
    return session


def record_command(session_id: int, t: float, text: str, kind: str) -> None:
    Command.objects.create(session_id=session_id, t=t, text=text[:10_000], kind=kind)


@transaction.atomic
def record_file(
    session_id: int,
    *,
    path: str,
    direction: str,
    size: int,
    sha256: str,
    allowed: bool,
    actor: str,
    source_ip: str | None,
) -> None:
    transfer = FileTransfer.objects.create(
        session_id=session_id,
        path=path[:1024],
        direction=direction,
        size=size,
        sha256=sha256,
        allowed=allowed,
    )
    audit.record(
        "session.file" if allowed else "session.file_refused",
        actor=actor,
        target=f"session {transfer.session.code}",
        source_ip=source_ip,
        data={"path": path[:1024], "direction": direction, "size": size, "sha256": sha256},
    )


@transaction.atomic
def close_session_row(
    session_id: int,
    *,
    reason: str,
    by: str | None,
    bytes_in: int,
    bytes_out: int,
    sha256: str,
    recording_error: str = "",
) -> bool:
    session = Session.objects.select_related("user", "device").get(pk=session_id)
    if session.recording and not recording_error:
        try:
            store_finished(session.recording)
        except (OSError, RecordingError) as exc:
            # The spool keeps the file; the audit event says it was not stored.
            log.error("session %s: the recording could not be stored: %s", session.code, exc)
            recording_error = f"the recording could not be stored: {exc}"
    won = session.close(reason, bytes_in=bytes_in, bytes_out=bytes_out, recording_sha256=sha256)
    if won:
        audit.record(
            "session.end",
            actor=by or "system",
            target=f"session {session.code}",
            source_ip=session.source_ip,
            data={
                "reason": reason,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "recording": session.recording,
                "recording_sha256": sha256,
                "recording_error": recording_error,
                "device": session.device.slug,
                "user": session.user.username,
            },
        )
    return won


def record_signal(session_id: int, kind: str, severity: str, detail: str) -> None:
    session = Session.objects.get(pk=session_id)
    audit.record(
        "session.signal",
        target=f"session {session.code}",
        source_ip=session.source_ip,
        data={"kind": kind, "severity": severity, "detail": detail[:1000]},
    )


# --- the live session ------------------------------------------------------------


class Observer:
    """What watches a live session as bytes pass (the detectors, the watch
    feed). Override only the hooks you need: the session calls a hook only
    on observers that override it, so the relay pays nothing for the rest."""

    def on_input(self, data: bytes, t: float) -> None:
        pass

    def on_output(self, data: bytes, t: float) -> None:
        pass

    def on_command(self, text: str, t: float) -> None:
        pass

    def on_file(self, path: str, direction: str, size: int, sha256: str, t: float) -> None:
        pass


def _overrides(observer: Any, hook: str) -> bool:
    return getattr(type(observer), hook, None) is not getattr(Observer, hook)


Closer = Callable[[str], Awaitable[None] | None]


class LiveSession:
    """One vendor connection to one device, from open to close.

    Open it with `await LiveSession.open(...)` from the event loop, passing a
    device fetched with its zone and site (select_related("zone__site")): the
    constructor reads the zone's time zone and must not query."""

    registry: ClassVar[dict[str, LiveSession]] = {}

    def __init__(self, session: Session, *, user: User, device: Device, grant: Grant) -> None:
        self.session = session
        self.code = str(session.code)
        self.username = user.username
        self.device_slug = device.slug
        self.source_ip = session.source_ip
        self.ends_at: datetime = grant.ends_at
        self.tz = device.zone.tzinfo
        self.group_names: list[str] = getattr(session, "group_list", None) or session.group_names()
        self.allow_upload = grant.allow_upload
        self.allow_download = grant.allow_download
        self.forward_ports = {int(p) for p in (grant.forward_ports or []) if str(p).isdigit()}
        self.observers: list[Any] = []
        self.size = (80, 24)  # the vendor's terminal, for watchers
        self.on_end: list[Callable[[LiveSession], Any]] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.ended = False
        self.end_reason = ""
        self._closers: list[Closer] = []
        self._notifiers: list[Callable[[str], None]] = []
        self._editor = LineEditor()
        self._pending: set[asyncio.Task] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._end_timers: list[asyncio.TimerHandle] = []
        self._closed = asyncio.Event()
        self._recording_error = ""
        self.device_conn: asyncssh.SSHClientConnection | None = None
        path = recordings_dir() / session.recording
        self.recording_path = path
        self.recorder = self.make_recorder(path)

    def make_recorder(self, path: Any) -> Any:
        """The session's recording writer. Front ends with another kind of
        recording (browser RDP: video plus an input log) override this; the
        writer needs elapsed/header/input/output/resize/flush/close."""
        return AsciicastWriter(path, started=self.session.started_at.timestamp())

    # -- opening ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        *,
        user: User,
        device: Device,
        grant: Grant,
        source_ip: str | None,
        client_kind: str,
        device_conn: asyncssh.SSHClientConnection | None = None,
    ) -> LiveSession:
        session = await database_sync_to_async(open_session_row)(
            user=user, device=device, grant=grant, source_ip=source_ip, client_kind=client_kind
        )
        try:
            live = cls(session, user=user, device=device, grant=grant)
        except RecordingError as exc:
            await database_sync_to_async(close_session_row)(
                session.pk,
                reason=f"the recording could not be written: {exc}",
                by=None,
                bytes_in=0,
                bytes_out=0,
                sha256="",
                recording_error=str(exc),
            )
            raise
        live.device_conn = device_conn
        cls.registry[live.code] = live
        live._start_timers()
        return live

    def _start_timers(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(1.0, self._flush_tick))
        self._schedule_end()

    def _schedule_end(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = (self.ends_at - timezone.now()).total_seconds()
        for before in WARNINGS_BEFORE_END:
            at = remaining - before.total_seconds()
            if at > 0:
                minutes = int(before.total_seconds() // 60)
                text = (
                    f"Your access to {self.device_slug} ends at "
                    f"{local_time_text(self.ends_at, self.tz)} "
                    f"(in {minutes} minute{'s' if minutes != 1 else ''})."
                )
                self._end_timers.append(loop.call_later(at, self.notify, text))
        self._end_timers.append(loop.call_later(max(0.0, remaining), self._grant_ended))
        self._timers.extend(self._end_timers)

    def set_ends_at(self, ends_at: datetime) -> None:
        """The grant's window changed while the session runs (an approver
        shortened it): end at the new time, with new warnings. Call from the
        session's event loop."""
        if self.ended:
            return
        for timer in self._end_timers:
            timer.cancel()
        self._end_timers = []
        self.ends_at = ends_at
        self._schedule_end()

    def _grant_ended(self) -> None:
        reason = (
            f"your access to {self.device_slug} ended at {local_time_text(self.ends_at, self.tz)}"
        )
        self._spawn(self.terminate(reason))

    def _flush_tick(self) -> None:
        if self.ended:
            return
        try:
            self.recorder.flush()
        except RecordingError as exc:
            self._recording_failed(exc)
            return
        self._timers.append(asyncio.get_running_loop().call_later(1.0, self._flush_tick))

    # -- front-end hooks ---------------------------------------------------------

    def add_closer(self, closer: Closer) -> None:
        """How to close this session's vendor side; called with the reason."""
        self._closers.append(closer)

    def add_notifier(self, notifier: Callable[[str], None]) -> None:
        """How to show a notice on the vendor's terminal."""
        self._notifiers.append(notifier)

    def elapsed(self) -> float:
        return self.recorder.elapsed()

    def header(self, width: int, height: int, term: str | None) -> None:
        self.size = (width, height)
        env = {"TERM": term} if term else None
        self._guard(
            self.recorder.header,
            width=width,
            height=height,
            title=f"{self.username} on {self.device_slug}",
            env=env,
            extra={
                "airlock": {"session": self.code, "user": self.username, "device": self.device_slug}
            },
        )

    def input(self, data: bytes, *, interactive: bool = True) -> None:
        """Bytes from the vendor to the device."""
        self.bytes_in += len(data)
        t = self.elapsed()
        self._guard(self.recorder.input, data, t)
        if interactive:
            for line in self._editor.feed(data):
                self.command(line, Command.Kind.LINE, t)
        for obs in self.observers:
            if _overrides(obs, "on_input"):
                self._observe(obs.on_input, data, t)

    def output(self, data: bytes) -> None:
        """Bytes from the device to the vendor."""
        self.bytes_out += len(data)
        t = self.elapsed()
        self._guard(self.recorder.output, data, t)
        for obs in self.observers:
            if _overrides(obs, "on_output"):
                self._observe(obs.on_output, data, t)

    def resize(self, width: int, height: int) -> None:
        self.size = (width, height)
        self._guard(self.recorder.resize, width, height)

    def command(self, text: str, kind: str = Command.Kind.EXEC, t: float | None = None) -> None:
        t = self.elapsed() if t is None else t
        self._spawn(database_sync_to_async(record_command)(self.session.pk, t, text, kind))
        for obs in self.observers:
            if _overrides(obs, "on_command"):
                self._observe(obs.on_command, text, t)

    def file(
        self, path: str, direction: str, size: int, sha256: str, *, allowed: bool = True
    ) -> None:
        t = self.elapsed()
        self._spawn(
            database_sync_to_async(record_file)(
                self.session.pk,
                path=path,
                direction=direction,
                size=size,
                sha256=sha256,
                allowed=allowed,
                actor=self.username,
                source_ip=self.source_ip,
            )
        )
        if allowed:
            for obs in self.observers:
                if _overrides(obs, "on_file"):
                    self._observe(obs.on_file, path, direction, size, sha256, t)

    def signal(self, kind: str, severity: str, detail: str) -> None:
        """Observers report anomalies here. Stored in the audit chain; the live-
        control issue routes it through the zone's response policy."""
        self._spawn(database_sync_to_async(record_signal)(self.session.pk, kind, severity, detail))
        for obs in self.observers:
            handler = getattr(obs, "on_signal", None)
            if handler is not None:
                self._observe(handler, kind, severity, detail)

    def notify(self, text: str) -> None:
        """Show a notice on the vendor's terminal (and in the recording)."""
        if self.ended:
            return
        line = f"\r\n[airlock] {text}\r\n"
        self._guard(self.recorder.output, line.encode())
        for notifier in list(self._notifiers):
            try:
                notifier(line)
            except Exception:  # a closed channel: nothing to show it on
                log.debug("notice not delivered", exc_info=True)

    # -- ending ------------------------------------------------------------------

    async def terminate(self, reason: str, by: str | None = None) -> None:
        """End the session now: the vendor sees `reason`, both sides close."""
        await self._end(reason, by=by, tell_vendor=True)

    async def close(self, reason: str = "the vendor disconnected") -> None:
        """The normal end (a side closed); nothing to tell the vendor."""
        await self._end(reason, by=None, tell_vendor=False)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _end(self, reason: str, *, by: str | None, tell_vendor: bool) -> None:
        if self.ended:
            await self._closed.wait()
            return
        self.ended = True
        self.end_reason = reason
        for timer in self._timers:
            timer.cancel()
        try:
            message = f"Session ended: {reason}" + (f" (by {by})" if by else "")
            if tell_vendor:
                try:
                    self.recorder.output(f"\r\n[airlock] {message}\r\n".encode())
                except RecordingError:
                    pass
            for closer in list(self._closers):
                try:
                    result = closer(message if tell_vendor else "")
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.warning("closing the vendor side of %s failed", self.code, exc_info=True)
            if self.device_conn is not None:
                self.device_conn.close()
            sha = ""
            try:
                sha = self.recorder.close()
            except RecordingError as exc:
                self._recording_error = self._recording_error or str(exc)
            current = asyncio.current_task()
            pending = [t for t in self._pending if t is not current]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await database_sync_to_async(close_session_row)(
                self.session.pk,
                reason=reason,
                by=by,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                sha256=sha,
                recording_error=self._recording_error,
            )
        finally:
            LiveSession.registry.pop(self.code, None)
            self._closed.set()
            for callback in list(self.on_end):
                try:
                    result = callback(self)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.warning("an on_end callback of %s failed", self.code, exc_info=True)

    # -- internals ---------------------------------------------------------------

    def _guard(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if self.ended:
            return
        try:
            write(*args, **kwargs)
        except RecordingError as exc:
            self._recording_failed(exc)

    def _recording_failed(self, exc: RecordingError) -> None:
        if self.ended:
            return
        log.error("session %s: %s; ending the session", self.code, exc)
        self._recording_error = str(exc)
        self._spawn(self.terminate("the session could not be recorded, so it was ended"))

    def _observe(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            # A detector that fails cannot watch; the session must not go on unwatched.
            log.exception("session %s: an observer failed; ending the session", self.code)
            if not self.ended:
                self._spawn(self.terminate("a session monitor failed, so the session was ended"))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: background work failed: %r", self.code, task.exception())


def local_time_text(at: datetime, tz: Any) -> str:
    return at.astimezone(tz).strftime("%H:%M:%S %Z")


__all__ = [
    "LiveSession",
    "DeviceTarget",
    "DeviceError",
    "dial_device",
    "load_device_target",
    "open_session_row",
    "close_session_row",
    "record_command",
    "record_file",
    "CIPHERS",
]
