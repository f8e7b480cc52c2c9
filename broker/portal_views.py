"""The access pages: vendors ask, approvers decide, auditors read.

Thin function views over broker.approvals, broker.sshkeys and
broker.access. Every object is looked up by its public code through
`Model.objects.visible_to(request.user)`, so anything a person may not see
is a 404. Decisions, revocations, locks and key registration need a recent
OTP (step-up).
"""

from __future__ import annotations

import functools
from datetime import datetime, time, timedelta
from typing import Any, Callable
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from broker import approvals, audit, sshkeys
from broker.access import AccessDenied, authorize
from broker.identity import client_ip, step_up_required
from broker.models import (
    AccessRequest, Approval, ApproverGroup, Device, Grant, Lock, SSHPublicKey, User, Zone,
)
from broker.portal_forms import (
    AccessRequestForm, DecisionForm, ListFilterForm, LockForm, RevokeForm, SSHKeyForm, local_input,
)

LIST_LIMIT = 200
View = Callable[..., HttpResponse]


def role_required(*roles: str) -> Callable[[View], View]:
    """The page is for people holding one of `roles` (see User.roles)."""
    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not set(roles) & set(request.user.roles):
                raise PermissionDenied(f"This page is for {' or '.join(roles)} accounts.")
            return view(request, *args, **kwargs)
        return wrapper
    return decorator


def zones_approved_by(user: User) -> QuerySet[Zone]:
    return Zone.objects.filter(approval_rules__group__members=user).distinct()


def is_zone_approver(user: User, zone: Zone) -> bool:
    return ApproverGroup.objects.filter(rules__zone=zone, members=user).exists()


def get_visible(request: HttpRequest, qs: QuerySet, code: UUID, kind: str) -> Any:
    """The object with this public code if `request.user` may see it, else
    404 — and when it exists but belongs to someone else, an audit event:
    probing another vendor's codes is worth a record."""
    obj = qs.visible_to(request.user).filter(code=code).first()
    if obj is None:
        if qs.model.objects.filter(code=code).exists():
            audit.record("access.not_visible", actor=request.user, target=f"{kind}:{code}",
                         source_ip=client_ip(request), data={"path": request.path})
        raise Http404(f"No such {kind}.")
    return obj


# --- vendor: devices and requests -------------------------------------------


@login_required
@role_required("vendor", "approver", "auditor")
def device_list(request: HttpRequest) -> HttpResponse:
    devices = (Device.objects.visible_to(request.user)
               .select_related("zone__site").order_by("zone__site__name", "zone__name", "slug"))
    return render(request, "broker/devices.html", {"devices": devices})


@login_required
@role_required("vendor")
def request_new(request: HttpRequest, code: UUID) -> HttpResponse:
    device = Device.objects.filter(code=code).select_related("zone__site").first()
    if device is None or not Device.objects.visible_to(request.user).filter(pk=device.pk).exists():
        if device is not None:
            # A real device this vendor may not ask for: worth a record.
            audit.record("request.refused", actor=request.user, target=f"device:{device.code}",
                         source_ip=client_ip(request), data={"why": "not_eligible"})
        raise Http404("No such device.")
    form = AccessRequestForm(request.POST or None, device=device)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            req = approvals.submit_request(
                request.user, device, protocols=data["protocols"], starts_at=data["starts_at"],
                duration=data["duration"], reason=data["reason"],
                wants_upload=data["wants_upload"], wants_download=data["wants_download"],
                source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Request sent. Approvers of {device.zone.name} were told.")
            return redirect("request-detail", code=req.code)
    now_text = timezone.now().astimezone(device.zone.tzinfo).strftime("%d %b %Y %H:%M %Z")
    return render(request, "broker/request_form.html",
                  {"form": form, "device": device, "now_text": now_text},
                  status=400 if form.errors else 200)


def _filtered(qs: QuerySet, form: ListFilterForm, *, time_field: str,
              by_status: Callable[[QuerySet, str], QuerySet]) -> QuerySet:
    """Apply the list filters; an invalid filter form filters nothing."""
    if not form.is_valid():
        return qs
    data = form.cleaned_data
    tz = timezone.get_current_timezone()
    if data.get("status"):
        qs = by_status(qs, data["status"])
    if data.get("device"):
        qs = qs.filter(device__slug=data["device"].strip())
    if data.get("vendor"):
        qs = qs.filter(user__vendor__name__icontains=data["vendor"].strip())
    if data.get("since"):
        qs = qs.filter(**{f"{time_field}__gte": datetime.combine(data["since"], time.min, tz)})
    if data.get("until"):
        next_day = datetime.combine(data["until"] + timedelta(days=1), time.min, tz)
        qs = qs.filter(**{f"{time_field}__lt": next_day})
    return qs


GRANT_STATES = [("active", "Active now"), ("upcoming", "Upcoming"), ("ended", "Ended"),
                ("revoked", "Revoked")]


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


@login_required
@role_required("vendor", "approver", "auditor")
def request_list(request: HttpRequest) -> HttpResponse:
    form = ListFilterForm(request.GET or None, statuses=AccessRequest.Status.choices)
    qs = AccessRequest.objects.visible_to(request.user).select_related(
        "user__vendor", "device__zone__site")
    qs = _filtered(qs, form, time_field="created_at",
                   by_status=lambda q, status: q.filter(status=status))
    return render(request, "broker/requests.html",
                  {"requests": qs[:LIST_LIMIT], "filter_form": form})


@login_required
@role_required("vendor", "approver", "auditor")
def request_detail(request: HttpRequest, code: UUID) -> HttpResponse:
    req = get_visible(request, AccessRequest.objects.select_related("user__vendor", "device__zone__site"),
                      code, "request")
    decisions = req.approvals.select_related("approver", "group")
    can_decide = (req.is_pending and req.user_id != request.user.pk
                  and is_zone_approver(request.user, req.device.zone)
                  and not decisions.filter(approver=request.user).exists())
    return render(request, "broker/request_detail.html", {
        "req": req, "decisions": decisions, "progress": approvals.quorum_progress(req),
        "can_decide": can_decide, "can_cancel": req.is_pending and req.user_id == request.user.pk,
        "grant": Grant.objects.filter(request=req).first(),
    })


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
    pending = (AccessRequest.objects.visible_to(request.user)
               .filter(status=AccessRequest.Status.PENDING,
                       device__zone__in=zones_approved_by(request.user))
               .select_related("user__vendor", "device__zone__site").order_by("created_at"))
    mine = set(Approval.objects.filter(approver=request.user, request__in=pending)
               .values_list("request_id", flat=True))
    rows = [{"req": r, "progress": approvals.quorum_progress(r), "decided": r.pk in mine,
             "own": r.user_id == request.user.pk} for r in pending]
    return render(request, "broker/queue.html", {"rows": rows})


@login_required
@role_required("approver")
@step_up_required
def request_decide(request: HttpRequest, code: UUID) -> HttpResponse:
    req = get_visible(request, AccessRequest.objects.select_related("user__vendor", "device__zone__site"),
                      code, "request")
    tz = req.device.zone.tzinfo
    form = DecisionForm(request.POST or None, tz=tz)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            approvals.decide(
                request.user, req, approve=data["decision"] == "approve", note=data["note"],
                ends_at=data["ends_at"], allow_upload=data["allow_upload"],
                allow_download=data["allow_download"], source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
            status = 409
        else:
            req.refresh_from_db()
            messages.success(request, f"Decision recorded. Request is {req.get_status_display().lower()}"
                             + (f" ({approvals.quorum_progress(req).summary})." if req.is_pending else "."))
            return redirect("request-detail", code=req.code)
    elif form.errors:
        status = 400
    start, end = approvals.requested_window(req, timezone.now())
    return render(request, "broker/decide.html", {
        "req": req, "form": form, "progress": approvals.quorum_progress(req),
        "window_start": local_input(start, tz), "window_end": local_input(end, tz),
    }, status=status)


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
    qs = _filtered(qs, form, time_field="starts_at", by_status=_grant_state)
    now = timezone.now()
    return render(request, "broker/grants.html", {
        "grants": [{"grant": g, "state": grant_state(g, now)} for g in qs[:LIST_LIMIT]],
        "filter_form": form,
    })


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
    grant = get_visible(request, Grant.objects.select_related(
        "user__vendor", "device__zone__site", "revoked_by"), code, "grant")
    now = timezone.now()
    state = grant_state(grant, now)
    denial = None
    if grant.user_id == request.user.pk and state == "active":
        # Ask the one decision function, so the page tells the truth
        # (a lock, an inactive device) rather than re-checking here.
        try:
            authorize(request.user, grant.device, protocol=grant.protocols[0], at=now,
                      source_ip=client_ip(request))
        except AccessDenied as exc:
            denial = str(exc)
    return render(request, "broker/grant_detail.html", {
        "grant": grant, "state": state, "denial": denial,
        "is_owner": grant.user_id == request.user.pk,
        "can_revoke": state in ("active", "upcoming") and is_zone_approver(request.user, grant.device.zone),
        "ssh_keys": SSHPublicKey.objects.filter(user=grant.user) if grant.user_id == request.user.pk else [],
    })


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
    grant = get_visible(request, Grant.objects.select_related("user__vendor", "device__zone__site"),
                        code, "grant")
    if not is_zone_approver(request.user, grant.device.zone):
        raise Http404("No such grant.")
    form = RevokeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if approvals.revoke_grant(request.user, grant, reason=form.cleaned_data["reason"],
                                  source_ip=client_ip(request)):
            messages.success(request, f"Access of {grant.user} to {grant.device} revoked.")
        else:
            messages.info(request, "This access was already revoked; nothing changed.")
        return redirect("grant-detail", code=grant.code)
    return render(request, "broker/grant_revoke.html", {"grant": grant, "form": form},
                  status=400 if form.errors else 200)


# --- SSH keys -------------------------------------------------------------------


@login_required
@role_required("vendor")
def ssh_key_list(request: HttpRequest) -> HttpResponse:
    return render(request, "broker/ssh_keys.html",
                  {"keys": SSHPublicKey.objects.filter(user=request.user), "label": sshkeys.label})


@login_required
@role_required("vendor")
@step_up_required
def ssh_key_new(request: HttpRequest) -> HttpResponse:
    form = SSHKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = sshkeys.register(request.user, form.cleaned_data["public_key"],
                                   name=form.cleaned_data["name"], source_ip=client_ip(request))
        except sshkeys.KeyRejected as exc:
            form.add_error("public_key", str(exc))
        else:
            messages.success(request, f"Key {key.fingerprint} registered.")
            return redirect("sshkey-list")
    return render(request, "broker/ssh_key_form.html", {"form": form},
                  status=400 if form.errors else 200)


@login_required
@require_POST
@role_required("vendor")
def ssh_key_delete(request: HttpRequest, code: UUID) -> HttpResponse:
    key = get_object_or_404(SSHPublicKey.objects.filter(user=request.user), code=code)
    sshkeys.delete(request.user, key, source_ip=client_ip(request))
    messages.success(request, f"Key {key.fingerprint} deleted.")
    return redirect("sshkey-list")


# --- locks ----------------------------------------------------------------------


@login_required
@role_required("approver", "auditor")
def lock_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    qs = Lock.objects.visible_to(request.user).select_related(
        "vendor", "user", "device__zone__site", "grant__device__zone__site", "created_by")
    show = request.GET.get("show", "active")
    if show == "active":
        qs = qs.active(now)
    kind = request.GET.get("kind", "")
    if kind in LOCK_KINDS:
        qs = qs.filter(**{f"{kind}__isnull": False})
    return render(request, "broker/locks.html", {
        "locks": [{"lock": lk, "active": lk.is_active(now)} for lk in qs[:LIST_LIMIT]],
        "show": show, "kind": kind, "kinds": LOCK_KINDS, "can_lock": request.user.is_approver,
    })


LOCK_KINDS = ("vendor", "user", "device", "grant")


@login_required
@role_required("approver")
@step_up_required
def lock_new(request: HttpRequest) -> HttpResponse:
    form = LockForm(request.POST or None, actor=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            lock = approvals.create_lock(
                request.user, vendor=data.get("vendor"), user=data.get("user"),
                device=data.get("device"), reason=data["reason"], ttl=data["ttl_delta"],
                source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Locked {lock.target_label}.")
            return redirect("lock-list")
    return render(request, "broker/lock_form.html", {"form": form},
                  status=400 if form.errors else 200)


@login_required
@role_required("approver")
@step_up_required
def lock_lift(request: HttpRequest, code: UUID) -> HttpResponse:
    lock = get_visible(request, Lock.objects.all(), code, "lock")
    if request.method == "POST":
        if approvals.lift_lock(request.user, lock, source_ip=client_ip(request)):
            messages.success(request, f"Lifted the lock on {lock.target_label}.")
        else:
            messages.info(request, "This lock was already lifted; nothing changed.")
        return redirect("lock-list")
    return render(request, "broker/lock_lift.html", {"lock": lock})
