"""The gate every browser door passes (terminal, remote desktop, watch): the
websocket checks django-otp's middleware does not make for websockets, the
connection ticket of zones that want an OTP per connection, the grant lookup
before authorize(), and the web process's control channel.

It lives in the session core rather than in sessions/doors/web because the
RDP door uses it too and doors do not import each other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device as OTPDevice

from broker import audit
from broker.access import AccessDenied, authorize
from broker.models import Grant, User
from sessions.live.closing import CLOSE_REFUSED
from sessions.live.control import ControlChannel

CONNECTION_OTP_TTL = 120.0
TICKETS_KEY = "airlock_terminal_tickets"


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
