"""The browser terminal: xterm.js in the portal, a websocket, and the same
session core as the native SSH gateway.

    wss://airlock/ws/terminal/<grant code>/?cols=120&rows=32

The consumer is a front door like the gateway, so it checks everything
itself before a byte reaches a device (django-otp's middleware does not run
for websockets):

1. the Origin header names this portal (ALLOWED_HOSTS and the request's own
   Host, or an entry of CSRF_TRUSTED_ORIGINS) — a page on another site cannot
   drive a vendor's terminal with the vendor's cookie;
2. the session cookie belongs to an active user whose session passed the OTP
   step (`otp_device_id` names a confirmed device of that user) and is within
   its absolute lifetime (and the terminal ends when that lifetime does);
3. when the device's zone asks for an OTP per connection, a connection ticket
   the terminal page issued after a fresh code (one use, CONNECTION_OTP_TTL);
4. `authorize(user, device, protocol="ssh", at=now, source_ip=...)`.

A refusal before the handshake closes it (the browser sees a failed
connection and nothing was relayed); a refusal the vendor should read (a
denial from authorize(), an unreachable device) is sent as one status message
and then the socket closes.

Frames: the browser sends keystrokes as binary frames and control messages as
JSON text frames (`{"type": "resize", "cols": 120, "rows": 32}`); Airlock sends
terminal output as binary frames and status as JSON text frames
(`{"type": "status"|"notice"|"ended"|"error", ...}`). A frame over
MAX_FRAME_BYTES or a malformed message ends the session with a clear message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncssh
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils import timezone

from broker import audit
from broker.access import AccessDenied, authorize
from broker.models import Grant, User
from sessions.live import control as live_control
from sessions.live.control import ControlChannel, ControlChannelLost
from sessions.live.core import DeviceError, LiveSession, dial_device, load_device_target
from sessions.live.revocation import signin_group

log = logging.getLogger("airlock.terminal")

MAX_FRAME_BYTES = 64 * 1024
MAX_COLS, MAX_ROWS = 500, 200
# Output waiting for the browser beyond this pauses reading from the device.
OUTPUT_HIGH_WATER = 1024 * 1024
CONNECTION_OTP_TTL = 120.0
TICKETS_KEY = "airlock_terminal_tickets"

# Close codes the page explains (static/airlock/terminal.js).
CLOSE_REFUSED = 4403
CLOSE_ENDED = 4000
CLOSE_BAD_MESSAGE = 4400
CLOSE_TOO_BIG = 1009


# --- checks on the handshake (plain functions; tests call them) ---------------


def origin_allowed(headers: dict[bytes, bytes]) -> bool:
    """The Origin names this portal: an entry of CSRF_TRUSTED_ORIGINS, or the
    request's own Host when that host is in ALLOWED_HOSTS. No Origin: refused
    (every browser sends one on a websocket handshake)."""
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if not origin or origin == "null":
        return False
    if origin.rstrip("/") in {o.rstrip("/") for o in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False
    netloc = parts.netloc.lower()
    domain, _ = split_domain_port(netloc)
    return bool(domain) and netloc == host and validate_host(domain, settings.ALLOWED_HOSTS)


def scope_client_ip(scope: dict[str, Any]) -> str | None:
    """The vendor's address, as broker.identity.client_ip() reads it for HTTP."""
    client = scope.get("client") or (None, None)
    remote = client[0] or ""
    if remote in settings.TRUSTED_PROXIES:
        headers = dict(scope.get("headers") or [])
        hops = [
            h.strip()
            for h in headers.get(b"x-forwarded-for", b"").decode("latin-1").split(",")
            if h.strip()
        ]
        if hops:
            try:
                return str(ipaddress.ip_address(hops[-1]))
            except ValueError:
                pass
    try:
        return str(ipaddress.ip_address(remote)) if remote else None
    except ValueError:
        return None


def verified_user(scope: dict[str, Any]) -> User | None:
    """The signed-in user if the session passed the OTP step, else None.

    The same rules as django-otp's OTPMiddleware (the device named in the
    session must exist, be confirmed and belong to the user) plus the
    absolute session lifetime of broker.middleware.SessionLifetimeMiddleware."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.models import Device as OTPDevice

    user = scope.get("user")
    session = scope.get("session")
    if user is None or session is None or not user.is_authenticated or not user.is_active:
        return None
    started = session.get("airlock_started_at")
    if started is None or time.time() - float(started) > settings.SESSION_ABSOLUTE_SECONDS:
        return None
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return None
    device = OTPDevice.from_persistent_id(str(persistent_id))
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return user


def issue_connection_ticket(session: Any, grant_code: str) -> None:
    """The terminal page calls this after a fresh OTP for a zone that wants
    one per connection: the next websocket for this grant may open."""
    tickets = dict(session.get(TICKETS_KEY) or {})
    tickets[str(grant_code)] = time.time()
    session[TICKETS_KEY] = tickets


def take_connection_ticket(session: Any, grant_code: str) -> bool:
    """Use up the ticket for `grant_code`; True if there was a fresh one."""
    tickets = dict(session.get(TICKETS_KEY) or {})
    issued = tickets.pop(str(grant_code), None)
    session[TICKETS_KEY] = tickets
    session.save()
    return issued is not None and 0 <= time.time() - float(issued) <= CONNECTION_OTP_TTL


class Refused(Exception):
    """The terminal cannot open; str() is the sentence for the vendor."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def admit(
    user: User, grant_code: str, *, protocol: str, source_ip: str | None, session: Any
) -> tuple[Grant, Any]:
    """Decide whether `user` may open a browser session (terminal: ssh,
    remote desktop: rdp) for the grant (sync). The decision is authorize()'s;
    this adds only the grant lookup and the per-connection OTP ticket."""
    grant = (
        Grant.objects.select_related("device__zone__site", "user__vendor")
        .filter(code=grant_code, user=user)
        .first()
    )
    if grant is None:
        raise Refused("no_grant", "there is no such access for you")
    device = grant.device
    try:
        decision = authorize(
            user, device, protocol=protocol, at=timezone.now(), source_ip=source_ip
        )
    except AccessDenied as denial:
        raise Refused(denial.reason, str(denial)) from None
    if decision.connection_code_required and not take_connection_ticket(session, grant_code):
        raise Refused(
            "otp_required",
            "this zone asks for a one-time code for every connection; reload the page "
            "and enter a fresh code",
        )
    return decision.grant, device


def record_refusal(
    user: User | None, target: str, source_ip: str | None, reason: str, message: str
) -> None:
    audit.record(
        "session.denied",
        actor=user if user is not None else "anonymous",
        target=target,
        source_ip=source_ip,
        data={"client": "browser", "reason": reason, "message": message[:300]},
    )


async def websocket_user(consumer: Any, *, target: str, what: str) -> User | None:
    """The first gate of every browser door (terminal, remote desktop, the
    watch views): the Origin must be this portal and the portal session must
    have passed the OTP step. Otherwise the refusal is audited, the socket
    is closed before it is accepted (nothing relayed) and None returned."""
    scope = consumer.scope
    source_ip = scope_client_ip(scope)
    headers = dict(scope.get("headers") or [])
    if not origin_allowed(headers):
        origin = headers.get(b"origin", b"(none)").decode("latin-1")[:100]
        await database_sync_to_async(record_refusal)(
            None, target, source_ip, "bad_origin", f"{what} from origin {origin}"
        )
        await consumer.close(code=CLOSE_REFUSED)
        return None
    user = await database_sync_to_async(verified_user)(scope)
    if user is None:
        await database_sync_to_async(record_refusal)(
            None, target, source_ip, "not_verified", f"{what} without an OTP-verified session"
        )
        await consumer.close(code=CLOSE_REFUSED)
        return None
    return user


# --- the web process's control channel --------------------------------------------

_controls: dict[asyncio.AbstractEventLoop, asyncio.Future[ControlChannel]] = {}


async def web_control() -> ControlChannel:
    """This process's ControlChannel (one per event loop), started on the
    first browser session: terminate messages reach the terminals this
    process holds, their rows are heart-beaten, and a lost channel layer
    refuses new terminals and ends live ones after the grace period."""
    loop = asyncio.get_running_loop()
    starting = _controls.get(loop)
    if starting is None:
        # The first caller starts it; callers arriving meanwhile await the same future.
        starting = _controls[loop] = loop.create_future()
        try:
            control = ControlChannel(f"web-{socket.gethostname()}-{os.getpid()}")
            await control.start()
        except BaseException as exc:
            del _controls[loop]
            starting.set_exception(exc)
            starting.exception()  # retrieved: the caller raises it below
            raise
        starting.set_result(control)
    return await asyncio.shield(starting)


async def stop_web_control() -> None:
    """Stop this loop's control channel (tests, and a clean shutdown)."""
    starting = _controls.pop(asyncio.get_running_loop(), None)
    if starting is not None and starting.done() and not starting.exception():
        await starting.result().stop()


# --- the consumer -------------------------------------------------------------------


class TerminalConsumer(AsyncWebsocketConsumer):
    """One browser terminal: one LiveSession, one shell channel on the device."""

    live: LiveSession | None = None
    device_chan: asyncssh.SSHClientChannel | None = None
    signin_group: str = ""

    async def connect(self) -> None:
        self.live = None
        self.device_chan = None
        self.outbox: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self.queued = 0
        self.reading_paused = False
        self.closing = False
        self.end_as = (CLOSE_ENDED, "ended")
        self.writer: asyncio.Task | None = None
        scope = self.scope
        self.grant_code = str(scope["url_route"]["kwargs"]["code"])
        self.source_ip = scope_client_ip(scope)
        user = await websocket_user(self, target=f"grant {self.grant_code}", what="websocket")
        if user is None:
            return
        self.user = user
        self.cols, self.rows = initial_size(scope.get("query_string", b""))
        # From here on the vendor is who they say: accept, so a refusal can
        # be explained on their screen.
        await self.accept()
        self.writer = asyncio.ensure_future(self._write_loop())
        try:
            await self._open()
        except Refused as refusal:
            await database_sync_to_async(record_refusal)(
                user, f"grant {self.grant_code}", self.source_ip, refusal.reason, str(refusal)
            )
            await self._finish(f"access denied: {refusal}", code=CLOSE_REFUSED, kind="refused")
        except Exception:
            log.exception("browser terminal: opening the session failed")
            await self._finish(
                "Airlock could not open this session", code=CLOSE_REFUSED, kind="refused"
            )

    async def _open(self) -> None:
        grant, device = await database_sync_to_async(admit)(
            self.user,
            self.grant_code,
            protocol="ssh",
            source_ip=self.source_ip,
            session=self.scope["session"],
        )
        try:
            control = await web_control()
            control.check_admission()
        except ControlChannelLost as exc:
            raise Refused("control_lost", str(exc)) from None
        self._status("connecting", device=device.slug)
        try:
            target = await database_sync_to_async(load_device_target)(device)
            device_conn = await dial_device(target)
        except DeviceError as exc:
            raise Refused(exc.reason, str(exc)) from None
        try:
            live = await LiveSession.open(
                user=self.user,
                device=device,
                grant=grant,
                source_ip=self.source_ip,
                client_kind="browser",
                device_conn=device_conn,
            )
        except Exception:
            device_conn.close()
            raise
        self.live = live
        live.add_closer(self._closed_by_core)
        live.add_notifier(lambda line: self._text({"type": "notice", "text": line.strip()}))
        # Terminate messages, heartbeats, detectors and the watch feed, as
        # for the native gateway; if that fails the session has ended.
        if not await live_control.watch(control, live):
            return
        # Signing out of the portal ends the terminals that sign-in opened.
        key = self.scope["session"].session_key
        if key:
            self.signin_group = signin_group(key)
            await self.channel_layer.group_add(self.signin_group, self.channel_name)
        try:
            live.header(self.cols, self.rows, "xterm-256color")
            chan, _ = await device_conn.create_session(
                lambda: DeviceSide(self),
                term_type="xterm-256color",
                term_size=(self.cols, self.rows),
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            text = getattr(exc, "reason", "") or str(exc)
            await live.terminate(f"the device refused the session ({text})")
            return
        self.device_chan = chan
        self._end_with_sign_in(live)
        self._status("connected", device=device.slug, session=live.code)

    def _end_with_sign_in(self, live: LiveSession) -> None:
        """The terminal lives no longer than the portal sign-in that opened
        it (SESSION_ABSOLUTE_SECONDS after signing in)."""
        started = float(self.scope["session"].get("airlock_started_at") or 0)
        remaining = started + settings.SESSION_ABSOLUTE_SECONDS - time.time()
        timer = asyncio.get_running_loop().call_later(
            max(0.0, remaining),
            lambda: asyncio.ensure_future(
                live.terminate("your portal sign-in expired; sign in again to reconnect")
            ),
        )
        live.on_end.append(lambda _live: timer.cancel())

    # -- browser → device

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        if size > MAX_FRAME_BYTES:
            await self._bad_message(
                f"a message of {size} bytes is over the limit of {MAX_FRAME_BYTES}",
                code=CLOSE_TOO_BIG,
            )
            return
        live, chan = self.live, self.device_chan
        if bytes_data is not None:
            if live is None or chan is None or live.ended:
                return  # nothing is relayed before the session is open
            live.input(bytes_data, interactive=True)
            chan.write(bytes_data)
            return
        try:
            message = json.loads(text_data or "")
        except ValueError:
            await self._bad_message("a control message is not JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "resize":
            cols, rows = message.get("cols"), message.get("rows")
            if not (
                _is_int(cols) and _is_int(rows) and 1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS
            ):
                await self._bad_message(
                    f"a resize message needs whole numbers: cols 1-{MAX_COLS} and rows 1-{MAX_ROWS}"
                )
                return
            self.cols, self.rows = cols, rows
            if live is not None and chan is not None and not live.ended:
                live.resize(cols, rows)
                chan.change_terminal_size(cols, rows)
        elif kind == "ping":
            self._text({"type": "pong"})
        else:
            await self._bad_message("unknown control message")

    async def _bad_message(self, why: str, *, code: int = CLOSE_BAD_MESSAGE) -> None:
        log.info("browser terminal %s: %s", self.live.code if self.live else "-", why)
        reason = f"the browser sent a message Airlock does not accept ({why})"
        self.end_as = (code, "error")
        if self.live is not None and not self.live.ended:
            await self.live.terminate(reason)
        await self._finish(reason, code=code, kind="error")

    async def session_terminate(self, message: dict[str, Any]) -> None:
        """From the sign-in group: the person signed out of the portal."""
        if self.live is not None and not self.live.ended:
            await self.live.terminate(
                str(message.get("reason") or "session ended"), by=message.get("by")
            )

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.signin_group:
            await self.channel_layer.group_discard(self.signin_group, self.channel_name)
        if self.live is not None and not self.live.ended:
            await self.live.close("the vendor closed the browser terminal")
        self._stop_device()
        if self.writer is not None:
            self.outbox.put_nowait(None)

    # -- device → browser

    def output(self, data: bytes) -> None:
        live = self.live
        if live is None or self.closing:
            return
        live.output(data)
        self.queued += len(data)
        self.outbox.put_nowait(("bytes", data))
        if (
            self.queued > OUTPUT_HIGH_WATER
            and self.device_chan is not None
            and not self.reading_paused
        ):
            self.reading_paused = True
            self.device_chan.pause_reading()

    def device_closed(self) -> None:
        if self.live is not None and not self.live.ended:
            asyncio.ensure_future(self._device_gone())

    async def _device_gone(self) -> None:
        assert self.live is not None
        await self.live.close("the device closed the session")
        await self._finish("the device closed the session", code=CLOSE_ENDED, kind="ended")

    def _text(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self.outbox.put_nowait(("text", json.dumps(message)))

    def _status(self, state: str, **extra: Any) -> None:
        self._text({"type": "status", "state": state, **extra})

    async def _write_loop(self) -> None:
        """The one writer of this socket: frames leave in order, and a slow
        browser slows the device down instead of filling memory."""
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "bytes":
                    await self.send(bytes_data=payload)
                    self.queued -= len(payload)
                    if self.reading_paused and self.queued < OUTPUT_HIGH_WATER // 4:
                        self.reading_paused = False
                        if self.device_chan is not None:
                            self.device_chan.resume_reading()
                elif kind == "text":
                    await self.send(text_data=payload)
                else:  # ("close", code)
                    await self.close(code=payload)
                    return
            except Exception:  # the browser went away; disconnect() follows
                return

    # -- ending

    async def _closed_by_core(self, message: str) -> None:
        """The core ended the session (terminate, grant end, revoke())."""
        self._stop_device()
        if message:
            code, kind = self.end_as
            await self._finish(message.removeprefix("Session ended: "), code=code, kind=kind)

    async def _finish(self, reason: str, *, code: int, kind: str) -> None:
        if self.closing:
            return
        self._text({"type": kind, "reason": reason})
        self.closing = True
        self.outbox.put_nowait(("close", code))
        if self.writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.writer), 5)
            except (TimeoutError, asyncio.CancelledError):
                pass

    def _stop_device(self) -> None:
        chan, self.device_chan = self.device_chan, None
        if chan is not None:
            try:
                chan.send_signal("HUP")
            except Exception:
                pass
            chan.close()


class DeviceSide(asyncssh.SSHClientSession):
    """The device's shell channel of one browser terminal."""

    def __init__(self, consumer: TerminalConsumer) -> None:
        self.consumer = consumer

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.consumer.output(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.consumer.device_closed()


def initial_size(query_string: bytes) -> tuple[int, int]:
    """cols/rows from the URL, clamped; 80x24 when absent or malformed."""
    query = parse_qs(query_string.decode("latin-1"))

    def number(name: str, default: int, top: int) -> int:
        try:
            value = int(query.get(name, [default])[0])
        except (TypeError, ValueError):
            return default
        return min(max(value, 1), top)

    return number("cols", 80, MAX_COLS), number("rows", 24, MAX_ROWS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = [
    "TerminalConsumer",
    "origin_allowed",
    "verified_user",
    "issue_connection_ticket",
    "take_connection_ticket",
    "admit",
    "web_control",
    "stop_web_control",
]
