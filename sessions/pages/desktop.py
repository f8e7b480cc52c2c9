"""Pages of browser RDP: the vendor's remote desktop and an approver's
read-only view. The pages only hold the noVNC canvas; the websocket
consumers (sessions/doors/rdp/consumer.py) decide and relay."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from broker import oversight
from broker.access import AccessDenied, authorize
from broker.identity import client_ip
from broker.models import Grant
from sessions.doors.rdp.desktop import missing_programs_sentence
from sessions.models import Session
from sessions.pages.connect import connection_otp


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def remote_desktop(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = (
        Grant.objects.select_related("device__zone__site", "user__vendor")
        .filter(code=code, user=request.user)
        .first()
    )
    if grant is None or not grant.device.rdp_host:
        raise Http404("No such access.")
    device = grant.device
    ip = client_ip(request)
    denial = None
    code_required = False
    try:
        decision = authorize(request.user, device, protocol="rdp", at=timezone.now(), source_ip=ip)
        code_required = decision.connection_code_required
    except AccessDenied as exc:
        denial = str(exc)
    # A host without the RDP packages says so before any code is asked.
    unavailable = missing_programs_sentence() if denial is None else ""
    needs_otp = code_required and not unavailable
    error = ""
    if needs_otp:
        needs_otp, error = connection_otp(request, grant, client="browser-rdp")
    return render(
        request,
        "sessions/rdp.html",
        {
            "grant": grant,
            "device": device,
            "denial": denial,
            "needs_otp": needs_otp,
            "otp_error": error,
            "ws_path": f"/ws/rdp/{grant.code}/",
            "view_only": False,
            "unavailable": unavailable,
        },
        status=403 if denial else 503 if unavailable else 200,
    )


@login_required
@require_GET
def remote_desktop_watch(request: HttpRequest, code: UUID) -> HttpResponse:
    session = (
        Session.objects.visible_to(request.user)
        .select_related("user", "device__zone__site", "grant")
        .filter(code=code, protocol="rdp")
        .first()
    )
    if session is None or not oversight.may(request.user, oversight.WATCH, session):
        raise Http404("No such session.")
    return render(
        request,
        "sessions/rdp.html",
        {
            "session": session,
            "grant": session.grant,
            "device": session.device,
            "denial": None,
            "needs_otp": False,
            "ws_path": f"/ws/rdp-watch/{session.code}/",
            "view_only": True,
        },
    )
