"""Recording review for people: the session list, the player with its command
timeline, the recording itself (verified bytes, byte ranges), the evidence
export and the evidence signing key.

Every session is looked up by its public code through
`Session.objects.visible_to(request.user)`; anything else — another vendor's
code, a code that is not a UUID, a path — is a 404.
"""

from __future__ import annotations

from uuid import UUID

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from broker import audit, oversight
from broker.identity import (
    client_ip,
)
from sessions.evidence import bundle as evidence
from sessions.evidence import review
from sessions.models import Session

LIST_LIMIT = 200
PLAYER_CSP = {"script-src": ["'self'", "'wasm-unsafe-eval'"]}


def visible_session(request: HttpRequest, code: UUID) -> Session:
    session = (
        Session.objects.visible_to(request.user)
        .select_related("user__vendor", "device__zone__site", "grant")
        .filter(code=code)
        .first()
    )
    if session is None:
        raise Http404("No such session.")
    return session


# --- review ---------------------------------------------------------------------------


@login_required
@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    filters = review.Filters.from_query(request.GET)
    sessions = list(review.search(request.user, filters)[: LIST_LIMIT + 1])
    truncated = len(sessions) > LIST_LIMIT
    rows = [{"session": s, "hits": review.hits(s, filters.q)} for s in sessions[:LIST_LIMIT]]
    visible = Session.objects.visible_to(request.user)
    return render(
        request,
        "sessions/review_list.html",
        {
            "rows": rows,
            "f": filters,
            "truncated": truncated,
            "limit": LIST_LIMIT,
            "protocols": Session._meta.get_field("protocol").choices,
            "vendors": sorted(
                {
                    s.user.vendor.name
                    for s in visible.select_related("user__vendor")[:500]
                    if s.user.vendor_id
                }
            ),
            "public_key": evidence.public_key_text(),
            "key_fingerprint": evidence.public_key_fingerprint(),
        },
    )


@login_required
@require_GET
@csp_update(PLAYER_CSP)
def session_detail(request: HttpRequest, code: UUID) -> HttpResponse:
    session = visible_session(request, code)
    check = review.integrity(session)
    if check.state == "tampered":
        audit.record(
            "session.tamper_detected",
            actor=request.user,
            target=f"session {session.code}",
            source_ip=client_ip(request),
            data={
                "message": check.message,
                "stored_sha256": check.sha256,
                "row_sha256": session.recording_sha256,
                "chain_sha256": check.chain_sha256,
            },
        )
    return render(
        request,
        "sessions/review_detail.html",
        {
            "session": session,
            "check": check,
            "timeline": review.timeline(session),
            "is_video": review.media_type(session).startswith("video/"),
            "ended_by": getattr(review.end_event(session), "actor", ""),
            "may_export": oversight.may(request.user, oversight.EXPORT, session)
            and not session.is_live,
            "may_watch": session.is_live and oversight.may(request.user, oversight.WATCH, session),
            "key_fingerprint": evidence.public_key_fingerprint(),
        },
    )


@login_required
@require_GET
def session_recording(request: HttpRequest, code: UUID) -> HttpResponse:
    """The recording for the player, only when its integrity holds. Answers
    single byte-range requests, which browsers use to seek RDP videos."""
    session = visible_session(request, code)
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
        response = HttpResponse(
            content[first : last + 1], status=206, content_type=review.media_type(session)
        )
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
    session = visible_session(request, code)
    if not oversight.may(request.user, oversight.EXPORT, session):
        raise PermissionDenied("Only auditors and the zone's approvers export evidence.")
    check, content = review.verified_recording(session)
    if content is None:
        return render(
            request,
            "sessions/evidence_refused.html",
            {"session": session, "check": check},
            status=409,
        )
    bundle = evidence.build(session, content, input_log=check.input_log)
    audit.record(
        "session.evidence_exported",
        actor=request.user,
        target=f"session {session.code}",
        source_ip=client_ip(request),
        data={
            "recording_sha256": session.recording_sha256,
            "signing_key": evidence.public_key_fingerprint(),
        },
    )
    response = HttpResponse(bundle, content_type="application/zip")
    stamp = session.started_at.strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = (
        f'attachment; filename="airlock-evidence-{session.device.slug}-{stamp}-{session.code}.zip"'
    )
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def evidence_key(request: HttpRequest) -> HttpResponse:
    """The public key that verifies evidence bundles (plain text, for scripts)."""
    return HttpResponse(evidence.public_key_text() + "\n", content_type="text/plain; charset=utf-8")
