"""What every page shares: safe redirects after sign-in, the role decorator,
and the 404-on-invisible lookup (explicit scoping, see STYLE.md)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from broker import audit
from broker.identity import client_ip
from broker.pages.forms import (
    ListFilterForm,
)

# --- helpers -------------------------------------------------------------------


def safe_next(request: HttpRequest, fallback: str = "home") -> str:
    """The ?next= target if it is a path on this site, else `fallback`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if is_local_path(request, target):
        return target
    return reverse(fallback)


def is_local_path(request: HttpRequest, target: str) -> bool:
    return (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    )


def with_next(name: str, request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    url = reverse(name)
    return f"{url}?{urlencode({'next': target})}" if is_local_path(request, target) else url


def posted(request: HttpRequest) -> Any:
    """The form data of a POST (even an empty one), None for a GET: an empty
    POST must show "enter ..." errors, not a blank form."""
    return request.POST if request.method == "POST" else None


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


def get_visible(request: HttpRequest, qs: QuerySet, code: UUID, kind: str) -> Any:
    """The object with this public code if `request.user` may see it, else
    404 — and when it exists but belongs to someone else, an audit event:
    probing another vendor's codes is worth a record."""
    obj = qs.visible_to(request.user).filter(code=code).first()
    if obj is None:
        if qs.model.objects.filter(code=code).exists():
            audit.record(
                "access.not_visible",
                actor=request.user,
                target=f"{kind}:{code}",
                source_ip=client_ip(request),
                data={"path": request.path},
            )
        raise Http404(f"No such {kind}.")
    return obj


def filtered(
    qs: QuerySet,
    form: ListFilterForm,
    *,
    time_field: str,
    by_status: Callable[[QuerySet, str], QuerySet],
) -> QuerySet:
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
