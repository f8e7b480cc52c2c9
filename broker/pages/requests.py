"""Access requests: what a vendor may ask for, asking, the approvers' queue and
decision. Thin views over broker/approvals.py."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from broker import approvals, audit, oversight
from broker.identity import client_ip, step_up_required
from broker.models import (
    AccessRequest,
    Approval,
    Device,
    Grant,
    Zone,
)
from broker.pages.forms import (
    AccessRequestForm,
    DecisionForm,
    ListFilterForm,
    local_input,
)
from broker.pages.guards import (
    LIST_LIMIT,
    filtered,
    get_visible,
    role_required,
)

# --- vendor: devices and requests -------------------------------------------


@login_required
@role_required("vendor", "approver", "auditor")
def device_list(request: HttpRequest) -> HttpResponse:
    devices = (
        Device.objects.visible_to(request.user)
        .select_related("zone__site")
        .order_by("zone__site__name", "zone__name", "slug")
    )
    return render(request, "broker/devices.html", {"devices": devices})


@login_required
@role_required("vendor")
def request_new(request: HttpRequest, code: UUID) -> HttpResponse:
    device = Device.objects.filter(code=code).select_related("zone__site").first()
    if device is None or not Device.objects.visible_to(request.user).filter(pk=device.pk).exists():
        if device is not None:
            # A real device this vendor may not ask for: worth a record.
            audit.record(
                "request.refused",
                actor=request.user,
                target=f"device:{device.code}",
                source_ip=client_ip(request),
                data={"why": "not_eligible"},
            )
        raise Http404("No such device.")
    form = AccessRequestForm(request.POST or None, device=device)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            req = approvals.submit_request(
                request.user,
                device,
                protocols=data["protocols"],
                starts_at=data["starts_at"],
                duration=data["duration"],
                reason=data["reason"],
                wants_upload=data["wants_upload"],
                wants_download=data["wants_download"],
                source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Request sent. Approvers of {device.zone.name} were told.")
            return redirect("request-detail", code=req.code)
    now_text = timezone.now().astimezone(device.zone.tzinfo).strftime("%d %b %Y %H:%M %Z")
    return render(
        request,
        "broker/request_form.html",
        {"form": form, "device": device, "now_text": now_text},
        status=400 if form.errors else 200,
    )


@login_required
@role_required("vendor", "approver", "auditor")
def request_list(request: HttpRequest) -> HttpResponse:
    form = ListFilterForm(request.GET or None, statuses=AccessRequest.Status.choices)
    qs = AccessRequest.objects.visible_to(request.user).select_related(
        "user__vendor", "device__zone__site"
    )
    qs = filtered(
        qs, form, time_field="created_at", by_status=lambda q, status: q.filter(status=status)
    )
    return render(
        request, "broker/requests.html", {"requests": qs[:LIST_LIMIT], "filter_form": form}
    )


@login_required
@role_required("vendor", "approver", "auditor")
def request_detail(request: HttpRequest, code: UUID) -> HttpResponse:
    req = get_visible(
        request,
        AccessRequest.objects.select_related("user__vendor", "device__zone__site"),
        code,
        "request",
    )
    decisions = req.approvals.select_related("approver", "group")
    can_decide = (
        req.is_pending
        and req.user_id != request.user.pk
        and oversight.may(request.user, oversight.MODERATE, req)
        and not decisions.filter(approver=request.user).exists()
    )
    return render(
        request,
        "broker/request_detail.html",
        {
            "req": req,
            "decisions": decisions,
            "progress": approvals.quorum_progress(req),
            "can_decide": can_decide,
            "can_cancel": req.is_pending and req.user_id == request.user.pk,
            "grant": Grant.objects.filter(request=req).first(),
        },
    )


@login_required
@require_POST
@role_required("vendor")
def request_cancel(request: HttpRequest, code: UUID) -> HttpResponse:
    req = get_visible(request, AccessRequest.objects.all(), code, "request")
    try:
        approvals.cancel_request(request.user, req, source_ip=client_ip(request))
    except approvals.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Request cancelled.")
    return redirect("request-detail", code=req.code)


# --- approver: queue and decisions --------------------------------------------


@login_required
@role_required("approver")
def approval_queue(request: HttpRequest) -> HttpResponse:
    pending = (
        AccessRequest.objects.visible_to(request.user)
        .filter(
            status=AccessRequest.Status.PENDING,
            device__zone__in=oversight.approver_zones(request.user, Zone.objects.all()),
        )
        .select_related("user__vendor", "device__zone__site")
        .order_by("created_at")
    )
    mine = set(
        Approval.objects.filter(approver=request.user, request__in=pending).values_list(
            "request_id", flat=True
        )
    )
    rows = [
        {
            "req": r,
            "progress": approvals.quorum_progress(r),
            "decided": r.pk in mine,
            "own": r.user_id == request.user.pk,
        }
        for r in pending
    ]
    return render(request, "broker/queue.html", {"rows": rows})


@login_required
@role_required("approver")
@step_up_required
def request_decide(request: HttpRequest, code: UUID) -> HttpResponse:
    req = get_visible(
        request,
        AccessRequest.objects.select_related("user__vendor", "device__zone__site"),
        code,
        "request",
    )
    tz = req.device.zone.tzinfo
    form = DecisionForm(request.POST or None, tz=tz)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            approvals.decide(
                request.user,
                req,
                approve=data["decision"] == "approve",
                note=data["note"],
                ends_at=data["ends_at"],
                allow_upload=data["allow_upload"],
                allow_download=data["allow_download"],
                source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
            status = 409
        else:
            req.refresh_from_db()
            messages.success(
                request,
                f"Decision recorded. Request is {req.get_status_display().lower()}"
                + (f" ({approvals.quorum_progress(req).summary})." if req.is_pending else "."),
            )
            return redirect("request-detail", code=req.code)
    elif form.errors:
        status = 400
    start, end = approvals.requested_window(req, timezone.now())
    return render(
        request,
        "broker/decide.html",
        {
            "req": req,
            "form": form,
            "progress": approvals.quorum_progress(req),
            "window_start": local_input(start, tz),
            "window_end": local_input(end, tz),
        },
        status=status,
    )
