"""Locks: listing, setting and lifting them (broker/models/locks.py)."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from broker import approvals
from broker.identity import client_ip, step_up_required
from broker.models import (
    Lock,
)
from broker.pages.forms import (
    LockForm,
)
from broker.pages.guards import LIST_LIMIT, get_visible, role_required

# --- locks ----------------------------------------------------------------------


@login_required
@role_required("approver", "auditor")
def lock_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    qs = Lock.objects.visible_to(request.user).select_related(
        "vendor", "user", "device__zone__site", "grant__device__zone__site", "created_by"
    )
    show = request.GET.get("show", "active")
    if show == "active":
        qs = qs.active(now)
    kind = request.GET.get("kind", "")
    if kind in LOCK_KINDS:
        qs = qs.filter(**{f"{kind}__isnull": False})
    return render(
        request,
        "broker/locks.html",
        {
            "locks": [{"lock": lk, "active": lk.is_active(now)} for lk in qs[:LIST_LIMIT]],
            "show": show,
            "kind": kind,
            "kinds": LOCK_KINDS,
            "can_lock": request.user.is_approver,
        },
    )


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
                request.user,
                vendor=data.get("vendor"),
                user=data.get("user"),
                device=data.get("device"),
                reason=data["reason"],
                ttl=data["ttl_delta"],
                source_ip=client_ip(request),
            )
        except approvals.Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Locked {lock.target_label}.")
            return redirect("lock-list")
    return render(
        request, "broker/lock_form.html", {"form": form}, status=400 if form.errors else 200
    )


@login_required
@role_required("approver")
@step_up_required
def lock_lift(request: HttpRequest, code: UUID) -> HttpResponse:
    # Visible locks are exactly those the rule lets this approver lift.
    lock = get_visible(request, Lock.objects.all(), code, "lock")
    if request.method == "POST":
        if approvals.lift_lock(request.user, lock, source_ip=client_ip(request)):
            messages.success(request, f"Lifted the lock on {lock.target_label}.")
        else:
            messages.info(request, "This lock was already lifted; nothing changed.")
        return redirect("lock-list")
    return render(request, "broker/lock_lift.html", {"lock": lock})
