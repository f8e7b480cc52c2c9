"""Pages of the sessions app for people: the browser terminal, live watch,
recording review (list, player, recording, evidence export) and the
evidence signing key.

Every session is looked up by its public code through
`Session.objects.visible_to(request.user)`: vendors see their own, approvers
their zones', auditors all; anything else — another vendor's code, a code
that is not a UUID, a path — is a 404.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from broker import audit
from broker.access import AccessDenied, authorize
from broker.identity import (
    client_ip, mark_otp_verified, otp_attempt_allowed, register_otp_failure, verify_otp,
)
from broker.models import Grant
from sessions import evidence, review
from sessions.models import Session
from sessions.terminal import MAX_FRAME_BYTES, issue_connection_ticket
from sessions.watch import may_watch

LIST_LIMIT = 200
# xterm.js draws its grid with <style> elements it creates at run time, so
# the two terminal pages (and only they) allow inline styles; scripts stay
# 'self' only. asciinema-player runs its terminal emulator as WebAssembly.
TERMINAL_CSP = {"style-src": ["'self'", "'unsafe-inline'"]}
PLAYER_CSP = {"script-src": ["'self'", "'wasm-unsafe-eval'"]}


def _get_session(request: HttpRequest, code: UUID) -> Session:
    session = (Session.objects.visible_to(request.user)
               .select_related("user__vendor", "device__zone__site", "grant")
               .filter(code=code).first())
    if session is None:
        raise Http404("No such session.")
    return session


def _may_export(user: Any, session: Session) -> bool:
    """Auditors and admins export any session they see; approvers their zones'."""
    return bool(user.is_auditor or user.is_staff or user.is_superuser
                or (not user.is_vendor_user and may_watch(user, session)))


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
    audit.record("otp.connection", actor=request.user, target=f"grant {grant.code}",
                 source_ip=client_ip(request), data={"device": grant.device.slug, "client": client})
    return False, ""


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
@csp_update(TERMINAL_CSP)
def terminal(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = (Grant.objects.select_related("device__zone__site", "user__vendor")
             .filter(code=code, user=request.user).first())
    if grant is None:
        raise Http404("No such access.")
    device = grant.device
    ip = client_ip(request)
    denial = None
    try:
        authorize(request.user, device, protocol="ssh", at=timezone.now(), source_ip=ip)
    except AccessDenied as exc:
        denial = str(exc)
    needs_otp = device.zone.requires_connection_otp and denial is None
    error = ""
    if needs_otp:
        needs_otp, error = connection_otp(request, grant, client="browser")
    return render(request, "sessions/terminal.html", {
        "grant": grant, "device": device, "denial": denial, "needs_otp": needs_otp,
        "otp_error": error, "max_frame": MAX_FRAME_BYTES,
    }, status=403 if denial else 200)


@login_required
@require_GET
@csp_update(TERMINAL_CSP)
def watch(request: HttpRequest, code: UUID) -> HttpResponse:
    session = _get_session(request, code)
    if not may_watch(request.user, session):
        raise Http404("No such session.")
    if session.protocol == "rdp":
        return redirect("remote-desktop-watch", code=session.code)
    return render(request, "sessions/watch.html", {"session": session})


# --- review ---------------------------------------------------------------------------


@login_required
@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    filters = review.Filters.from_query(request.GET)
    sessions = list(review.search(request.user, filters)[:LIST_LIMIT + 1])
    truncated = len(sessions) > LIST_LIMIT
    rows = [{"session": s, "hits": review.hits(s, filters.q)} for s in sessions[:LIST_LIMIT]]
    visible = Session.objects.visible_to(request.user)
    return render(request, "sessions/review_list.html", {
        "rows": rows, "f": filters, "truncated": truncated, "limit": LIST_LIMIT,
        "protocols": Session._meta.get_field("protocol").choices,
        "vendors": sorted({s.user.vendor.name for s in visible.select_related("user__vendor")[:500]
                           if s.user.vendor_id}),
        "public_key": evidence.public_key_text(),
        "key_fingerprint": evidence.public_key_fingerprint(),
    })


@login_required
@require_GET
@csp_update(PLAYER_CSP)
def session_detail(request: HttpRequest, code: UUID) -> HttpResponse:
    session = _get_session(request, code)
    check = review.integrity(session)
    if check.state == "tampered":
        audit.record("session.tamper_detected", actor=request.user,
                     target=f"session {session.code}", source_ip=client_ip(request),
                     data={"message": check.message, "stored_sha256": check.sha256,
                           "row_sha256": session.recording_sha256,
                           "chain_sha256": check.chain_sha256})
    return render(request, "sessions/review_detail.html", {
        "session": session, "check": check, "timeline": review.timeline(session),
        "is_video": review.media_type(session).startswith("video/"),
        "ended_by": getattr(review.end_event(session), "actor", ""),
        "may_export": _may_export(request.user, session) and not session.is_live,
        "may_watch": session.is_live and may_watch(request.user, session),
        "key_fingerprint": evidence.public_key_fingerprint(),
    })


@login_required
@require_GET
def session_recording(request: HttpRequest, code: UUID) -> HttpResponse:
    """The recording for the player, only when its integrity holds. Answers
    single byte-range requests, which browsers use to seek RDP videos."""
    session = _get_session(request, code)
    check, content = review.verified_recording(session)
    if content is None:
        return HttpResponse(check.message, status=409, content_type="text/plain; charset=utf-8")
    wanted = byte_range(request.headers.get("Range", ""), len(content))
    if wanted is None:
        response = HttpResponse(content, content_type=review.media_type(session))
    elif wanted == UNSATISFIABLE:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{len(content)}"
    else:
        first, last = wanted
        response = HttpResponse(content[first:last + 1], status=206,
                                content_type=review.media_type(session))
        response["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, no-store"
    return response


UNSATISFIABLE = (-1, -1)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single `Range: bytes=...` request, None to
    send the whole body (no header, several ranges, or one we do not parse,
    as RFC 9110 allows), or UNSATISFIABLE."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    start, dash, end = spec.strip().partition("-")
    if not dash or not (start or end) or not (start + end).isdigit():
        return None
    if not start:  # the last N bytes
        length = int(end)
        return (max(0, size - length), size - 1) if length and size else UNSATISFIABLE
    first = int(start)
    if first >= size:
        return UNSATISFIABLE
    last = min(int(end), size - 1) if end else size - 1
    return (first, last) if last >= first else None


@login_required
@require_GET
def session_evidence(request: HttpRequest, code: UUID) -> HttpResponse:
    session = _get_session(request, code)
    if not _may_export(request.user, session):
        raise PermissionDenied("Only auditors and the zone's approvers export evidence.")
    check, content = review.verified_recording(session)
    if content is None:
        return render(request, "sessions/evidence_refused.html",
                      {"session": session, "check": check}, status=409)
    bundle = evidence.build(session, content, input_log=review.read_input_log(session))
    audit.record("session.evidence_exported", actor=request.user,
                 target=f"session {session.code}", source_ip=client_ip(request),
                 data={"recording_sha256": session.recording_sha256,
                       "signing_key": evidence.public_key_fingerprint()})
    response = HttpResponse(bundle, content_type="application/zip")
    stamp = session.started_at.strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = (
        f'attachment; filename="airlock-evidence-{session.device.slug}-{stamp}-{session.code}.zip"')
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def evidence_key(request: HttpRequest) -> HttpResponse:
    """The public key that verifies evidence bundles (plain text, for scripts)."""
    return HttpResponse(evidence.public_key_text() + "\n", content_type="text/plain; charset=utf-8")
