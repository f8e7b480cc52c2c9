"""Pages that open a session from the browser: the terminal page and the live
watch page of a terminal session, and the per-connection code a zone may ask for."""

from __future__ import annotations

from uuid import UUID

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from broker import audit, oversight
from broker.access import AccessDenied, authorize
from broker.identity import (
    client_ip,
    mark_otp_verified,
    otp_attempt_allowed,
    register_otp_failure,
    verify_otp,
)
from broker.models import Grant
from sessions.doors.web.terminal import MAX_FRAME_BYTES
from sessions.live.websocket import issue_connection_ticket
from sessions.pages.review import visible_session

# xterm.js draws its grid with <style> elements it creates at run time, so
# the two terminal pages (and only they) allow inline styles; scripts stay
# 'self' only. asciinema-player runs its terminal emulator as WebAssembly.
TERMINAL_CSP = {"style-src": ["'self'", "'unsafe-inline'"]}


# --- the browser terminal ------------------------------------------------------------


def connection_otp(request: HttpRequest, grant: Grant, *, client: str) -> tuple[bool, str]:
    """The per-connection code of a zone that asks for one, for any browser
    door: returns (still needed, error sentence). A right code issues the
    one-use ticket the websocket consumer takes (terminal.take_connection_ticket)."""
    if request.method != "POST":
        return True, ""
    if not otp_attempt_allowed(request, request.user):
        return True, "Too many wrong codes. Wait before trying again."
    otp_device, error = verify_otp(request.user, request.POST.get("code", ""))
    if otp_device is None:
        register_otp_failure(request, request.user, step="connection")
        return True, error
    mark_otp_verified(request)
    issue_connection_ticket(request.session, str(grant.code))
    audit.record(
        "otp.connection",
        actor=request.user,
        target=f"grant {grant.code}",
        source_ip=client_ip(request),
        data={"device": grant.device.slug, "client": client},
    )
    return False, ""


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
@csp_update(TERMINAL_CSP)
def terminal(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = (
        Grant.objects.select_related("device__zone__site", "user__vendor")
        .filter(code=code, user=request.user)
        .first()
    )
    if grant is None:
        raise Http404("No such access.")
    device = grant.device
    ip = client_ip(request)
    denial = None
    code_required = False
    try:
        decision = authorize(request.user, device, protocol="ssh", at=timezone.now(), source_ip=ip)
        code_required = decision.connection_code_required
    except AccessDenied as exc:
        denial = str(exc)
    needs_otp = code_required
    error = ""
    if needs_otp:
        needs_otp, error = connection_otp(request, grant, client="browser")
    return render(
        request,
        "sessions/terminal.html",
        {
            "grant": grant,
            "device": device,
            "denial": denial,
            "needs_otp": needs_otp,
            "otp_error": error,
            "max_frame": MAX_FRAME_BYTES,
        },
        status=403 if denial else 200,
    )


@login_required
@require_GET
@csp_update(TERMINAL_CSP)
def watch(request: HttpRequest, code: UUID) -> HttpResponse:
    session = visible_session(request, code)
    if not oversight.may(request.user, oversight.WATCH, session):
        raise Http404("No such session.")
    if session.protocol == "rdp":
        return redirect("remote-desktop-watch", code=session.code)
    return render(request, "sessions/watch.html", {"session": session})
