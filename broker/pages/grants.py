"""Grants: the vendor's and approvers' lists, how to connect, ending and
revoking."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from broker import approvals, oversight
from broker.access import AccessDenied, authorize
from broker.identity import client_ip, step_up_required
from broker.models import (
    Grant,
    SSHPublicKey,
)
from broker.pages.forms import (
    ListFilterForm,
    RevokeForm,
)
from broker.pages.guards import (
    LIST_LIMIT,
    filtered,
    get_visible,
    role_required,
)

GRANT_STATES = [
    ("active", "Active now"),
    ("upcoming", "Upcoming"),
    ("ended", "Ended"),
    ("revoked", "Revoked"),
]


def _grant_state(qs: QuerySet, state: str) -> QuerySet:
    now = timezone.now()
    if state == "active":
        return qs.live(now)
    if state == "upcoming":
        return qs.filter(revoked_at=None, starts_at__gt=now)
    if state == "ended":
        return qs.filter(revoked_at=None, ends_at__lte=now)
    if state == "revoked":
        return qs.exclude(revoked_at=None)
    return qs


# --- grants ---------------------------------------------------------------------


@login_required
@role_required("vendor", "approver", "auditor")
def grant_list(request: HttpRequest) -> HttpResponse:
    data = request.GET or None
    if data is None and request.user.roles == ["approver"]:
        # Approvers come here to see what is live now (and revoke it).
        data = {"status": "active"}
    form = ListFilterForm(data, statuses=GRANT_STATES)
    qs = Grant.objects.visible_to(request.user).select_related("user__vendor", "device__zone__site")
    qs = filtered(qs, form, time_field="starts_at", by_status=_grant_state)
    now = timezone.now()
    return render(
        request,
        "broker/grants.html",
        {
            "grants": [{"grant": g, "state": grant_state(g, now)} for g in qs[:LIST_LIMIT]],
            "filter_form": form,
        },
    )


def grant_state(grant: Grant, at: datetime) -> str:
    if grant.revoked_at is not None and grant.revoked_at <= at:
        return "revoked"
    if at < grant.starts_at:
        return "upcoming"
    if at >= grant.ends_at:
        return "ended"
    return "active"


@login_required
@role_required("vendor", "approver", "auditor")
def grant_detail(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = get_visible(
        request,
        Grant.objects.select_related("user__vendor", "device__zone__site", "revoked_by"),
        code,
        "grant",
    )
    now = timezone.now()
    state = grant_state(grant, now)
    denial = None
    if grant.user_id == request.user.pk and state == "active":
        # Ask the one decision function, so the page tells the truth
        # (a lock, an inactive device) rather than re-checking here.
        try:
            authorize(
                request.user,
                grant.device,
                protocol=grant.protocols[0],
                at=now,
                source_ip=client_ip(request),
            )
        except AccessDenied as exc:
            denial = str(exc)
    return render(
        request,
        "broker/grant_detail.html",
        {
            "grant": grant,
            "state": state,
            "denial": denial,
            "is_owner": grant.user_id == request.user.pk,
            "can_revoke": state in ("active", "upcoming")
            and oversight.may(request.user, oversight.TERMINATE, grant),
            "ssh_keys": SSHPublicKey.objects.filter(user=grant.user)
            if grant.user_id == request.user.pk
            else [],
        },
    )


@login_required
@require_POST
@role_required("vendor")
def grant_end(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = get_visible(request, Grant.objects.all(), code, "grant")
    try:
        approvals.end_grant_early(request.user, grant, source_ip=client_ip(request))
    except approvals.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Access ended. Thank you — live sessions are closed.")
    return redirect("grant-detail", code=grant.code)


@login_required
@role_required("approver")
@step_up_required
def grant_revoke(request: HttpRequest, code: UUID) -> HttpResponse:
    grant = get_visible(
        request, Grant.objects.select_related("user__vendor", "device__zone__site"), code, "grant"
    )
    if not oversight.may(request.user, oversight.TERMINATE, grant):
        raise Http404("No such grant.")
    form = RevokeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if approvals.revoke_grant(
            request.user, grant, reason=form.cleaned_data["reason"], source_ip=client_ip(request)
        ):
            messages.success(request, f"Access of {grant.user} to {grant.device} revoked.")
        else:
            messages.info(request, "This access was already revoked; nothing changed.")
        return redirect("grant-detail", code=grant.code)
    return render(
        request,
        "broker/grant_revoke.html",
        {"grant": grant, "form": form},
        status=400 if form.errors else 200,
    )
