"""The landing page, the health check, inviting people, the audit trail page and
the error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as dt_time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from broker import audit, invitations
from broker.identity import (
    client_ip,
)
from broker.models import AuditEvent
from broker.pages.forms import (
    AuditFilterForm,
    InvitationForm,
)
from broker.pages.guards import posted


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


# --- home pages ------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """One page; a section per role the user holds (broker/home_<role>.html)."""
    return render(
        request,
        "broker/home.html",
        {"role_templates": [f"broker/home_{role}.html" for role in request.user.roles]},
    )


# --- people (admins) -------------------------------------------------------------


def _admin_required(request: HttpRequest) -> None:
    if not request.user.is_admin:
        raise PermissionDenied("Only administrators can invite people.")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def invite(request: HttpRequest) -> HttpResponse:
    """Invite someone by email for one role."""
    _admin_required(request)
    form = InvitationForm(posted(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        role = data["role"]
        invitation, _token = invitations.invite(
            email=data["email"],
            username=data["username"],
            invited_by=request.user,
            vendor=data["vendor"],
            approver_groups=data["approver_groups"],
            is_auditor=role == InvitationForm.Role.AUDITOR,
            is_staff=role == InvitationForm.Role.ADMIN,
            source_ip=client_ip(request),
        )
        messages.success(
            request,
            f"Invitation sent to {invitation.email}. The link works once "
            f"and expires in {int(settings.INVITATION_TTL.total_seconds() // 3600)} hours.",
        )
        return redirect("invite")
    return render(request, "broker/invite.html", {"form": form})


# --- audit trail (auditors) ------------------------------------------------------


@login_required
@require_http_methods(["GET"])
def audit_trail(request: HttpRequest) -> HttpResponse:
    """Read-only list of audit events with filters, and the chain's status."""
    if not (request.user.is_auditor or request.user.is_superuser):
        raise PermissionDenied("The audit trail is for auditors.")
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.order_by("-id")
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            events = events.filter(actor__iexact=data["actor"])
        if data["action"]:
            action = data["action"]
            events = (
                events.filter(action__startswith=action)
                if action.endswith(".")
                else events.filter(action=action)
            )
        if data["since"]:
            events = events.filter(at__gte=datetime.combine(data["since"], dt_time.min, UTC))
        if data["until"]:
            events = events.filter(at__lte=datetime.combine(data["until"], dt_time.max, UTC))
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "broker/audit_trail.html",
        {
            "form": form,
            "page": page,
            "problem": audit.verify(),
            "query": query.urlencode(),
        },
    )


# --- errors ----------------------------------------------------------------------


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(request, "403_csrf.html", {}, status=403)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: say which kind of bad request it was."""
    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        return render(
            request,
            "413.html",
            {
                "limit_kib": settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024,
            },
            status=413,
        )
    context: dict[str, Any] = {"unknown_host": isinstance(exception, DisallowedHost)}
    return render(request, "400.html", context, status=400)
