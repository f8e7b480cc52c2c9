"""Browser RDP websockets: the vendor's remote desktop and an approver's
read-only view of it.

    wss://airlock/ws/rdp/<grant code>/?width=1280&height=800
    wss://airlock/ws/rdp-watch/<session code>/

Both consumers check everything themselves before a byte is relayed (the
Origin, an active user whose session passed the OTP step; for the vendor
`authorize(..., protocol="rdp")`, for a watcher the right to watch the
session), then relay noVNC's RFB stream to the session's private Xvnc
socket (sessions/doors/rdp/desktop.py), parsing the browser's half (sessions/doors/rdp/rfb.py).

The RDP session is a LiveSession like the SSH ones (`RDPLiveSession`):
terminate, locks, grant end and signals end it through the same core; its
recording is a video of the private display (Session.recording, SHA-256 in
the row and the audit chain) plus an input log in asciicast v2 next to it
(typed text as "i" events, clicks, clipboard and notices as "m" markers;
its SHA-256 goes into the audit chain as `session.input_log`).

When the vendor's websocket goes away the session stays for
RDP_DISCONNECT_GRACE seconds (a reload re-attaches to it), then ends.
The end reason reaches the page as the websocket close reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from broker import audit, oversight
from broker.models import Device, Grant, User
from sessions.anomalies.models import Signal
from sessions.anomalies.response import raise_signal
from sessions.doors.rdp import rfb
from sessions.doors.rdp.desktop import (
    REFUSED_CREDENTIAL,
    RUNTIME_PACKAGES,
    Desktop,
    DesktopError,
    check_certificate,
    clamp_size,
    clean_up_at_start,
    load_rdp_target,
    missing_programs_sentence,
    setting,
)
from sessions.live.closing import CLOSE_BAD_MESSAGE, CLOSE_ENDED, CLOSE_REFUSED
from sessions.live.control import ControlChannelLost
from sessions.live.control import watch as put_under_control
from sessions.live.core import DeviceError, LiveSession, close_session_row, open_session_row
from sessions.live.recording import (
    AsciicastWriter,
    RecordingError,
    file_sha256,
    recordings_dir,
    store_finished,
)
from sessions.live.revocation import signin_group
from sessions.live.websocket import (
    Refused,
    admit,
    record_refusal,
    scope_client_ip,
    web_control,
    websocket_user,
)
from sessions.models import Session

log = logging.getLogger("airlock.rdp")

MAX_FRAME_BYTES = 256 * 1024
READ_CHUNK = 256 * 1024
BUTTONS = {1: "left", 2: "middle", 4: "right"}

# The RDP sessions this process holds, by session code (the busy limit).
RDP_SESSIONS: dict[str, RDPLiveSession] = {}
# Sessions whose vendor websocket went away, by (user pk, grant code).
PARKED: dict[tuple[int, str], RDPLiveSession] = {}


def input_log_name(recording: str) -> str:
    return recording.removesuffix(".webm") + ".input.cast"


# --- the recording -------------------------------------------------------------


class RDPRecorder:
    """The recording writer of an RDP session, with the session core's
    interface: ffmpeg writes the video; this writes the input log and hashes
    both at the end. A stopped ffmpeg is a RecordingError at the next
    once-a-second flush, so the session ends (fail closed)."""

    def __init__(self, video: Path, log_path: Path, *, started: float, desktop: Desktop) -> None:
        self.video = video
        self.desktop = desktop
        self.log = AsciicastWriter(log_path, started=started)
        self.input_log_sha256 = ""
        self.recording = False

    def elapsed(self) -> float:
        return self.log.elapsed()

    def header(self, **kwargs: Any) -> None:
        self.log.header(**kwargs)

    def input(self, data: bytes, t: float | None = None) -> None:
        self.log.input(data, t)

    def output(self, data: bytes, t: float | None = None) -> None:
        # The core writes its notices ("Session ended: …") here.
        self.log.marker(data.decode("utf-8", "replace").strip().removeprefix("[airlock] "), t)

    def resize(self, width: int, height: int, t: float | None = None) -> None:
        self.log.resize(width, height, t)

    def marker(self, label: str, t: float | None = None) -> None:
        self.log.marker(label, t)

    def flush(self) -> None:
        self.log.flush()
        if self.recording and not self.desktop.recorder_alive():
            raise RecordingError("the video recorder stopped")

    def close(self) -> str:
        """Close the input log; return the video's SHA-256 (ffmpeg has
        finished: the session's closer stopped the desktop first)."""
        self.input_log_sha256 = self.log.close()
        if not self.video.exists() or self.video.stat().st_size == 0:
            raise RecordingError("the video recording is missing")
        return file_sha256(self.video)


class RDPLiveSession(LiveSession):
    """A LiveSession whose recording is a video plus an input log."""

    def __init__(self, session: Session, *, desktop: Desktop, **kwargs: Any) -> None:
        self.desktop = desktop  # before the core's __init__ calls make_recorder
        self.watchers: list[RDPWatchConsumer] = []
        self.consumer: RDPConsumer | None = None
        self.input_blocked = False
        super().__init__(session, **kwargs)

    def make_recorder(self, path: Any) -> Any:
        self.video_path = Path(path)
        log_path = recordings_dir() / input_log_name(self.session.recording)
        return RDPRecorder(
            self.video_path,
            log_path,
            started=self.session.started_at.timestamp(),
            desktop=self.desktop,
        )

    @classmethod
    async def open_rdp(
        cls, *, user: User, device: Device, grant: Grant, source_ip: str | None, desktop: Desktop
    ) -> RDPLiveSession:
        session = await database_sync_to_async(open_rdp_row)(
            user=user, device=device, grant=grant, source_ip=source_ip
        )
        try:
            live = cls(session, desktop=desktop, user=user, device=device, grant=grant)
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
        # The desktop stops (the video is finished) before the core hashes it.
        live.add_closer(lambda message: desktop.stop())
        cls.registry[live.code] = live
        RDP_SESSIONS[live.code] = live
        live.on_end.append(_session_ended)
        live._start_timers()
        return live


def open_rdp_row(*, user: User, device: Device, grant: Grant, source_ip: str | None) -> Session:
    session = open_session_row(
        user=user,
        device=device,
        grant=grant,
        source_ip=source_ip,
        client_kind="browser",
        protocol="rdp",
    )
    session.recording = session.recording.removesuffix(".cast") + ".webm"
    Session.objects.filter(pk=session.pk).update(recording=session.recording)
    return session


def finish_input_log(session_id: int, sha256: str) -> None:
    """Store the input log like the video and put its hash in the audit chain."""
    session = Session.objects.get(pk=session_id)
    name = input_log_name(session.recording)
    error = ""
    try:
        store_finished(name)
    except (OSError, RecordingError) as exc:
        error = str(exc)
    # The row and the chain both hold the hash: review refuses the input log
    # when the stored bytes, the row and the chain disagree.
    Session.objects.filter(pk=session_id).update(
        artefacts={**session.artefacts, "input_log": sha256}
    )
    audit.record(
        "session.input_log",
        target=f"session {session.code}",
        source_ip=session.source_ip,
        data={"name": name, "sha256": sha256, "error": error},
    )


async def _session_ended(live: Any) -> None:
    RDP_SESSIONS.pop(live.code, None)
    for key, parked in list(PARKED.items()):
        if parked is live:
            PARKED.pop(key, None)
    await live.desktop.stop()
    await database_sync_to_async(finish_input_log)(live.session.pk, live.recorder.input_log_sha256)
    for watcher in list(live.watchers):
        await watcher.end(f"the session ended: {live.end_reason}")


def input_log_markers(data: bytes) -> list[dict[str, Any]]:
    """Timeline entries of the review page from an input log: clipboard
    transfers (allowed or blocked) and what Airlock ignored or noted."""
    items: list[dict[str, Any]] = []
    for line in data.decode("utf-8", "replace").splitlines()[1:]:
        try:
            t, kind, text = json.loads(line)
        except (ValueError, TypeError):
            continue
        if kind != "m" or not isinstance(text, str) or text.startswith(("click ", "key ")):
            continue
        label = "clipboard" if text.startswith("clipboard") else "note"
        items.append({"t": float(t), "kind": "input", "text": text[:300], "label": label})
    return items


# --- admission (sync; tests call it) ---------------------------------------------


def device_alert(
    device: Device, kind: str, detail: str, source_ip: str | None, severity: str
) -> None:
    """A device-side problem admins must hear about: a signal through the
    zone's response policy (medium: approvers are alerted; a changed
    certificate is high, like a changed SSH host key) and an error log line."""
    log.error("RDP device %s: %s", device.slug, detail)
    raise_signal(
        origin=Signal.Origin.DETECTOR,
        kind=kind,
        severity=severity,
        detail=detail,
        device=device,
        address=source_ip,
        source_ip=source_ip,
    )


def close_reason(text: str) -> str:
    """A websocket close reason is at most 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode("utf-8", "ignore")


# --- the vendor's remote desktop --------------------------------------------------


class RDPConsumer(AsyncWebsocketConsumer):
    """One vendor's browser on one RDP session."""

    async def connect(self) -> None:
        self.live: RDPLiveSession | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pump: asyncio.Task | None = None
        self.parser: rfb.ClientStream | None = None
        self.keys = rfb.KeyLog()
        self.buttons = 0
        self.tokens = 2.0 * float(setting("RDP_MAX_INPUT_PER_SECOND", 400))
        self.refilled = time.monotonic()
        self.closing = False
        self.signin_group = ""
        scope = self.scope
        self.grant_code = str(scope["url_route"]["kwargs"]["code"])
        self.source_ip = scope_client_ip(scope)
        user = await websocket_user(self, target=f"grant {self.grant_code}", what="RDP websocket")
        if user is None:
            return
        self.user = user
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        self.width, self.height = clamp_size(
            query.get("width", [None])[0], query.get("height", [None])[0]
        )
        protocols = scope.get("subprotocols") or []
        await self.accept("binary" if "binary" in protocols else None)
        try:
            await self._open()
        except Refused as refusal:
            await database_sync_to_async(record_refusal)(
                user, f"grant {self.grant_code}", self.source_ip, refusal.reason, str(refusal)
            )
            await self._finish(str(refusal), code=CLOSE_REFUSED)
        except Exception:
            log.exception("browser RDP: opening the session failed")
            await self._finish("Airlock could not open this remote desktop", code=CLOSE_REFUSED)

    async def _open(self) -> None:
        grant, device = await database_sync_to_async(admit)(
            self.user,
            self.grant_code,
            protocol="rdp",
            source_ip=self.source_ip,
            session=self.scope["session"],
        )
        parked = PARKED.pop((self.user.pk, self.grant_code), None)
        if parked is not None and not parked.ended:
            await self._attach(parked)
            return
        try:
            control = await web_control()
            control.check_admission()
        except ControlChannelLost as exc:
            raise Refused("control_lost", str(exc)) from None
        # Normally done at start-up already (runbroker, ASGI lifespan).
        await asyncio.to_thread(clean_up_at_start)
        missing = missing_programs_sentence()
        if missing:
            log.error(
                "%s (Debian: apt-get install %s)", missing, " ".join(RUNTIME_PACKAGES.values())
            )
            raise Refused("rdp_unavailable", missing)
        limit = int(setting("RDP_MAX_SESSIONS", 8))
        if len(RDP_SESSIONS) >= limit:
            raise Refused(
                "busy",
                f"Airlock is busy: all {limit} remote desktops of this broker "
                "are in use; try again in a few minutes",
            )
        try:
            target = await database_sync_to_async(load_rdp_target)(device)
            await check_certificate(target)
        except DeviceError as exc:
            if exc.reason == "certificate_mismatch":
                await database_sync_to_async(device_alert)(
                    device,
                    "rdp_certificate_changed",
                    f"{device.slug} presented RDP certificate sha256:"
                    f"{getattr(exc, 'presented', '?')}, not the pinned one",
                    self.source_ip,
                    "high",
                )
            raise Refused(exc.reason, str(exc)) from None
        desktop = Desktop(
            width=self.width,
            height=self.height,
            allow_upload=grant.allow_upload,
            allow_download=grant.allow_download,
        )
        try:
            await desktop.start_display()
            await desktop.connect(target, timeout=float(setting("RDP_CONNECT_TIMEOUT", 20)))
        except BaseException as exc:
            # Whatever went wrong (or a cancelled handshake): nothing stays running.
            await asyncio.shield(desktop.stop())
            if not isinstance(exc, DesktopError):
                raise
            if str(exc) == REFUSED_CREDENTIAL:
                await database_sync_to_async(device_alert)(
                    device,
                    "rdp_credential_refused",
                    f"{device.slug} refused Airlock's vaulted RDP credential",
                    self.source_ip,
                    "medium",
                )
            raise Refused(exc.reason, str(exc)) from None
        finally:
            del target  # the password's last reference here
        try:
            live = await RDPLiveSession.open_rdp(
                user=self.user,
                device=device,
                grant=grant,
                source_ip=self.source_ip,
                desktop=desktop,
            )
        except Exception:
            await desktop.stop()
            raise
        live._guard(
            live.recorder.header,
            width=self.width,
            height=self.height,
            title=f"{self.user.username} on {device.slug}",
            extra={
                "airlock": {
                    "session": live.code,
                    "user": self.user.username,
                    "device": device.slug,
                    "protocol": "rdp",
                    "video": live.session.recording,
                }
            },
        )
        try:
            await desktop.start_recording(live.video_path, int(setting("RDP_VIDEO_FPS", 5)))
        except OSError:
            await live.terminate("the session could not be recorded, so it was ended")
            raise Refused("recording_failed", "the session could not be recorded, so it was ended")
        live.recorder.recording = True
        if not await put_under_control(control, live):
            raise Refused(
                "control_lost", live.end_reason or "Airlock could not control the session"
            )
        live.device_watch = asyncio.ensure_future(self._watch_device(live))  # type: ignore[attr-defined]
        if device.rdp_security == Device.RDPSecurity.TLS:
            live.input_blocked = True
            live.login_wait = asyncio.ensure_future(_await_logon(live))  # type: ignore[attr-defined]
        await self._attach(live)

    async def _attach(self, live: RDPLiveSession) -> None:
        """Relay this websocket to the session's display."""
        handle = getattr(live, "grace_timer", None)
        if handle is not None:
            handle.cancel()
        self.live = live
        live.consumer = self
        live.add_closer(self._closed_by_core)
        self.parser = rfb.ClientStream(
            max_cut_text=int(setting("RDP_MAX_CLIPBOARD", 64 * 1024)),
            allow_clipboard=live.allow_upload,
            view_only=live.input_blocked,
        )
        reader, self.writer = await live.desktop.open_rfb()
        self.pump = asyncio.ensure_future(self._pump(reader))
        # Signing out of the portal ends the remote desktops that sign-in
        # opened (sessions.live.revocation.end_portal_signin publishes there).
        key = self.scope["session"].session_key
        if key and self.channel_layer is not None:
            self.signin_group = signin_group(key)
            await self.channel_layer.group_add(self.signin_group, self.channel_name)

    async def session_terminate(self, message: dict[str, Any]) -> None:
        """From the sign-in group: the person signed out of the portal."""
        live = self.live
        if live is not None and not live.ended and live.consumer is self:
            await live.terminate(
                str(message.get("reason") or "session ended"), by=message.get("by")
            )

    async def _watch_device(self, live: RDPLiveSession) -> None:
        """xfreerdp ending means the device side is gone."""
        await live.desktop.rdp_exited.wait()
        if not live.ended:
            await live.terminate(f"the remote desktop connection to {live.device_slug} ended")

    # -- display → browser

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        live = self.live
        assert live is not None and self.parser is not None
        display = rfb.ServerStream(self.parser)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                try:
                    copies = display.feed(data)
                except rfb.RFBError as exc:
                    # What cannot be followed cannot be logged: fail closed.
                    await live.terminate(
                        f"the remote desktop sent something Airlock cannot follow ({exc})"
                    )
                    return
                for copy in copies:
                    self._log_copy(live, copy)
                live.bytes_out += len(data)
                await self.send(bytes_data=data)
        except Exception:
            pass
        if not live.ended and not self.closing and live.consumer is self:
            await live.terminate("the private display closed")

    # -- browser → display

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        live, parser, writer = self.live, self.parser, self.writer
        if live is None or parser is None or writer is None or live.ended or self.closing:
            return  # nothing is relayed before the session is open
        if bytes_data is None:
            await self._refuse_input("a text frame (noVNC sends binary frames only)")
            return
        if len(bytes_data) > MAX_FRAME_BYTES:
            await self._refuse_input(
                f"a frame of {len(bytes_data)} bytes (at most {MAX_FRAME_BYTES})"
            )
            return
        parser.view_only = live.input_blocked
        try:
            forward, events = parser.feed(bytes_data)
        except rfb.RFBError as exc:
            await self._refuse_input(str(exc))
            return
        if events and not self._within_rate(len(events)):
            limit = int(setting("RDP_MAX_INPUT_PER_SECOND", 400))
            await live.terminate(
                f"the browser sent input faster than Airlock accepts "
                f"(more than {limit} events a second)"
            )
            return
        for event in events:
            self._log_event(live, event)
        if forward:
            live.bytes_in += len(forward)
            writer.write(forward)
            await writer.drain()

    def _within_rate(self, count: int) -> bool:
        """A token bucket: RDP_MAX_INPUT_PER_SECOND events a second, bursts
        of two seconds' worth (a paste typed by noVNC is a burst)."""
        limit = float(setting("RDP_MAX_INPUT_PER_SECOND", 400))
        now = time.monotonic()
        self.tokens = min(2 * limit, self.tokens + (now - self.refilled) * limit)
        self.refilled = now
        self.tokens -= count
        return self.tokens >= 0

    def _log_event(self, live: RDPLiveSession, event: rfb.Event) -> None:
        recorder: RDPRecorder = live.recorder
        if isinstance(event, rfb.Key):
            text, editor = self.keys.feed(event)
            if editor:
                live.input(editor, interactive=True)
            if text and (not editor or text.startswith("<")):
                live._guard(recorder.marker, f"key {text}")
        elif isinstance(event, rfb.Pointer):
            pressed = event.buttons & ~self.buttons
            self.buttons = event.buttons
            for bit, name in BUTTONS.items():
                if pressed & bit:
                    live._guard(recorder.marker, f"click {name} at {event.x},{event.y}")
        elif isinstance(event, rfb.CutText):
            digest = hashlib.sha256(event.text.encode("latin-1")).hexdigest()
            if event.allowed:
                live._guard(
                    recorder.marker, f"clipboard to device ({event.size} bytes): {event.text[:500]}"
                )
            else:
                live._guard(
                    recorder.marker,
                    f"clipboard to device blocked ({event.size} bytes, not allowed by the grant)",
                )
            live._spawn(
                database_sync_to_async(audit.record)(
                    "session.clipboard" if event.allowed else "session.clipboard_refused",
                    actor=live.username,
                    target=f"session {live.code}",
                    source_ip=live.source_ip,
                    data={"direction": "to_device", "size": event.size, "sha256": digest},
                )
            )
        elif isinstance(event, rfb.Dropped):
            live._guard(recorder.marker, f"ignored {event.what}")

    def _log_copy(self, live: RDPLiveSession, copy: rfb.ServerCutText) -> None:
        """Clipboard from the device reached the browser (Xvnc sends it only
        when the grant allows downloads)."""
        live._guard(
            live.recorder.marker, f"clipboard from device ({copy.size} bytes): {copy.text[:500]}"
        )
        digest = hashlib.sha256(copy.text.encode("latin-1")).hexdigest()
        live._spawn(
            database_sync_to_async(audit.record)(
                "session.clipboard",
                actor=live.username,
                target=f"session {live.code}",
                source_ip=live.source_ip,
                data={"direction": "from_device", "size": copy.size, "sha256": digest},
            )
        )

    async def _refuse_input(self, why: str) -> None:
        reason = f"the browser sent a message Airlock does not accept ({why})"
        log.info("browser RDP %s: %s", self.live.code if self.live else "-", why)
        if self.live is not None and not self.live.ended:
            await self.live.terminate(reason)
        else:
            await self._finish(reason, code=CLOSE_BAD_MESSAGE)

    # -- ending

    async def disconnect(self, code: int) -> None:
        live = self.live
        self._drop_stream()
        if self.signin_group and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.signin_group, self.channel_name)
        if self.closing or live is None or live.ended or live.consumer is not self:
            return
        self.closing = True
        live.consumer = None
        grace = float(setting("RDP_DISCONNECT_GRACE", 5))
        PARKED[(self.user.pk, self.grant_code)] = live
        loop = asyncio.get_running_loop()
        live.grace_timer = loop.call_later(  # type: ignore[attr-defined]
            grace,
            lambda: (
                live.ended
                or live.consumer is not None
                or live._spawn(live.close("the vendor closed the remote desktop"))
            ),
        )

    async def _closed_by_core(self, message: str) -> None:
        live = self.live
        if live is not None and live.consumer not in (self, None):
            return  # a newer websocket holds this session
        reason = (
            message.removeprefix("Session ended: ")
            if message
            else (live.end_reason if live is not None else "the session ended")
        )
        await self._finish(reason, code=CLOSE_ENDED)

    async def _finish(self, reason: str, *, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        self._drop_stream()
        try:
            await self.close(code=code, reason=close_reason(reason))
        except Exception:
            pass

    def _drop_stream(self) -> None:
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _await_logon(live: RDPLiveSession) -> None:
    """TLS-only devices: vendor input stays blocked until the device reports
    a logon, or the session ends after RDP_LOGIN_TIMEOUT (the vendor must
    never type into a device login screen)."""
    desktop = live.desktop
    waits = {
        asyncio.ensure_future(desktop.logged_on.wait()),
        asyncio.ensure_future(desktop.logon_failed.wait()),
    }
    try:
        await asyncio.wait(
            waits,
            timeout=float(setting("RDP_LOGIN_TIMEOUT", 30)),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for wait in waits:
            wait.cancel()
    if desktop.logon_failed.is_set() and not desktop.logged_on.is_set():
        if not live.ended:
            await live.terminate(REFUSED_CREDENTIAL)
        return
    if not desktop.logged_on.is_set():
        if not live.ended:
            await live.terminate(
                f"{live.device_slug} did not get past its login screen in time; "
                "Airlock ended the session before any input reached it"
            )
        return
    live.input_blocked = False
    live._guard(live.recorder.marker, "the device reported the logon; input enabled")


# --- an approver watching ---------------------------------------------------------


def find_rdp_watchable(user: User, code: str) -> Session | None:
    session = (
        Session.objects.visible_to(user)
        .select_related("user", "device")
        .filter(code=code, protocol="rdp")
        .first()
    )
    if session is None or not session.is_live or not oversight.may(user, oversight.WATCH, session):
        return None
    return session


def record_watch(user: User, session: Session, source_ip: str | None) -> None:
    audit.record(
        "session.watch",
        actor=user,
        target=f"session {session.code}",
        source_ip=source_ip,
        data={"protocol": "rdp"},
    )


class RDPWatchConsumer(AsyncWebsocketConsumer):
    """Read-only noVNC on the same display: the parser drops every key,
    pointer and clipboard message of this stream."""

    async def connect(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.pump: asyncio.Task | None = None
        self.closing = False
        self.live: RDPLiveSession | None = None
        code = str(self.scope["url_route"]["kwargs"]["code"])
        source_ip = scope_client_ip(self.scope)
        user = await websocket_user(self, target=f"session {code}", what="RDP watch websocket")
        if user is None:
            return
        session = await database_sync_to_async(find_rdp_watchable)(user, code)
        if session is None:
            await self.close(code=CLOSE_REFUSED)
            return
        protocols = self.scope.get("subprotocols") or []
        await self.accept("binary" if "binary" in protocols else None)
        live = RDP_SESSIONS.get(code)
        if live is None or live.ended:
            await self.end("this session is not held by this broker process (or has ended)")
            return
        await database_sync_to_async(record_watch)(user, session, source_ip)
        self.live = live
        live.watchers.append(self)
        self.parser = rfb.ClientStream(view_only=True)
        reader, self.writer = await live.desktop.open_rfb()
        self.pump = asyncio.ensure_future(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                await self.send(bytes_data=data)
        except Exception:
            pass
        reason = self.live.end_reason if self.live is not None else ""
        await self.end(f"the session ended: {reason}" if reason else "the session ended")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.writer is None or bytes_data is None or len(bytes_data) > MAX_FRAME_BYTES:
            return
        try:
            forward, _ = self.parser.feed(bytes_data)
        except rfb.RFBError as exc:
            await self.end(f"the browser sent a message Airlock does not accept ({exc})")
            return
        if forward:
            self.writer.write(forward)
            await self.writer.drain()

    async def end(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        try:
            await self.close(code=CLOSE_ENDED, reason=close_reason(reason))
        except Exception:
            pass

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.live is not None and self in self.live.watchers:
            self.live.watchers.remove(self)


__all__ = [
    "RDPConsumer",
    "RDPWatchConsumer",
    "RDPLiveSession",
    "RDPRecorder",
    "RDP_SESSIONS",
    "input_log_name",
]
