"""Views of the sessions app: the machine endpoint for signals and the
approver oversight pages (live sessions across gateways, signals, a zone's
response policy). Thin functions over signals_intake.py, revocation.py and
the models."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from broker import oversight
from broker.identity import client_ip, step_up_required
from broker.models import Zone
from sessions.anomalies import intake as signals_intake
from sessions.anomalies.detectors import DEFAULT_COMMAND_RULES
from sessions.anomalies.models import (
    DEFAULT_RESPONSES,
    SEVERITY_ORDER,
    CommandRule,
    Gateway,
    ResponseRule,
    Signal,
)
from sessions.live.revocation import revoke
from sessions.models import Command, Session

MAX_LOCK_MINUTES = 7 * 24 * 60


# --- the machine endpoint --------------------------------------------------------


@csrf_exempt
@require_POST
def signals_intake_view(request: HttpRequest) -> HttpResponse:
    """POST /api/signals/ — HMAC-signed; see sessions/anomalies/intake.py."""
    now = timezone.now()
    source_ip = client_ip(request)
    headers = {
        k: request.headers.get(k, "")
        for k in ("X-Airlock-Sensor", "X-Airlock-Timestamp", "X-Airlock-Id", "X-Airlock-Signature")
    }
    try:
        body = _bounded_body(request)
        sensor, records = signals_intake.authenticate(headers, body, at=now)
        status, result = signals_intake.accept(sensor, records, at=now, source_ip=source_ip)
    except signals_intake.Rejected as exc:
        signals_intake.rejected(exc, headers, source_ip)
        return JsonResponse({"error": str(exc)}, status=exc.status)
    return JsonResponse(result, status=status)


def _bounded_body(request: HttpRequest) -> bytes:
    """The raw body, never reading more than MAX_BODY + 1 bytes."""
    limit = signals_intake.MAX_BODY
    length = request.META.get("CONTENT_LENGTH") or ""
    if length:
        try:
            if int(length) > limit:
                raise signals_intake.Rejected(413, f"body larger than {limit} bytes")
        except ValueError:
            raise signals_intake.Rejected(400, "bad Content-Length") from None
    data = request.read(limit + 1)
    if len(data) > limit:
        raise signals_intake.Rejected(413, f"body larger than {limit} bytes")
    return data


# --- oversight -------------------------------------------------------------------


def _overseer(user: Any) -> bool:
    return user.is_approver or user.is_auditor or user.is_admin


def _require_overseer(request: HttpRequest) -> None:
    if not _overseer(request.user):
        raise PermissionDenied("Only approvers, auditors and admins oversee sessions.")


def _get_session_for_approver(request: HttpRequest, code: Any) -> Session:
    session = (
        Session.objects.visible_to(request.user)
        .select_related("user__vendor", "device__zone", "grant")
        .filter(code=code)
        .first()
    )
    if session is None or not oversight.may(request.user, oversight.TERMINATE, session):
        raise Http404("No such session.")
    return session


@login_required
@require_GET
def live_sessions(request: HttpRequest) -> HttpResponse:
    _require_overseer(request)
    now = timezone.now()
    last_command = Command.objects.filter(session=OuterRef("pk")).order_by("-t", "-id")
    sessions = (
        Session.objects.visible_to(request.user)
        .live()
        .select_related("user__vendor", "device__zone")
        .annotate(
            last_command=Subquery(last_command.values("text")[:1]),
            signal_count=Count("signals", distinct=True),
        )
        .order_by("-started_at")
    )
    dead_after = timedelta(seconds=getattr(settings, "AIRLOCK_GATEWAY_DEAD_SECONDS", 60))
    gateways = list(Gateway.objects.filter(stopped_at=None))
    alive = {g.name: g.is_alive(now, dead_after) for g in gateways}
    rows = [
        {
            "session": s,
            "gateway_alive": alive.get(s.gateway_id),
            "may_act": oversight.may(request.user, oversight.TERMINATE, s),
        }
        for s in sessions
    ]
    return render(
        request,
        "sessions/live.html",
        {
            "rows": rows,
            "gateways": gateways,
            "alive": alive,
            "now": now,
            "lock_choices": [
                (60, "1 hour"),
                (240, "4 hours"),
                (1440, "1 day"),
                (0, "until lifted"),
            ],
        },
    )


@login_required
@require_POST
@step_up_required
def terminate_session(request: HttpRequest, code: Any) -> HttpResponse:
    session = _get_session_for_approver(request, code)
    reason = (request.POST.get("reason") or "").strip()
    lock = request.POST.get("lock", "")
    try:
        minutes = int(request.POST.get("lock_minutes") or 60)
    except ValueError:
        minutes = -1
    if not reason or len(reason) > 300:
        messages.error(request, "Give a reason (at most 300 characters); the vendor will read it.")
        return redirect("live-sessions")
    if lock not in {"", "user", "device"} or not 0 <= minutes <= MAX_LOCK_MINUTES:
        messages.error(request, "Choose a lock of the user or the device and a valid duration.")
        return redirect("live-sessions")
    ip = client_ip(request)
    until = timezone.now() + timedelta(minutes=minutes) if minutes else None
    # The lock first: from this instant nothing it names may reconnect.
    if lock == "user":
        revoke(session.user, reason=reason, by=request.user, source_ip=ip, until=until)
    elif lock == "device":
        revoke(session.device, reason=reason, by=request.user, source_ip=ip, until=until)
    revoke(session, reason=reason, by=request.user, source_ip=ip)
    done = f"Session of {session.user.username} on {session.device.slug} terminated"
    if lock:
        target = session.user.username if lock == "user" else session.device.slug
        done += f"; {target} locked" + (f" for {minutes} minutes" if minutes else " until lifted")
    messages.success(request, done + ".")
    return redirect("live-sessions")


@login_required
@require_GET
def signal_list(request: HttpRequest) -> HttpResponse:
    _require_overseer(request)
    signals = (
        Signal.objects.visible_to(request.user)
        .select_related("device", "sensor", "user")
        .prefetch_related("sessions")[:200]
    )
    return render(request, "sessions/signals.html", {"signals": signals})


@login_required
@require_GET
def zone_policy(request: HttpRequest, code: Any) -> HttpResponse:
    _require_overseer(request)
    zone = get_object_or_404(
        oversight.visible(request.user, Zone.objects.select_related("site"), oversight.CONFIGURE),
        code=code,
    )
    rules = {r.severity: r for r in ResponseRule.objects.filter(zone=zone)}
    labels = dict(ResponseRule.Action.choices)
    responses = []
    for severity in SEVERITY_ORDER:
        rule = rules.get(severity)
        actions, minutes = (
            (rule.actions, rule.lock_minutes) if rule else DEFAULT_RESPONSES[severity]
        )
        responses.append(
            {
                "severity": severity,
                "is_default": rule is None,
                "actions": [labels.get(a, a) for a in actions],
                "lock_minutes": minutes,
                "locks": any(a.startswith("lock_") for a in actions),
            }
        )
    return render(
        request,
        "sessions/zone_policy.html",
        {
            "zone": zone,
            "responses": responses,
            "command_rules": CommandRule.for_zone(zone),
            "default_command_rules": DEFAULT_COMMAND_RULES,
        },
    )
