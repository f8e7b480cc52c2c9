"""Portal views for people: signing in (password, then OTP), enrolment,
invitations, the profile, the role home pages and the audit trail.

Thin functions with stacked decorators over the concept modules
(identity.py, invitations.py, audit.py). Every view but the exempt ones in
broker.middleware.OTP_EXEMPT_VIEWS already runs with an OTP-verified session.
"""

from __future__ import annotations

from datetime import datetime, time as dt_time
from datetime import timezone as dt_timezone
from typing import Any

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.core.exceptions import (
    DisallowedHost, PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent,
)
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from broker.models import StaticDevice, StaticToken
from broker.models import TOTPDevice

from broker import audit, invitations
from broker.forms import (
    AuditFilterForm, EnrolForm, InvitationForm, LoginForm, OTPForm, SetPasswordForm,
)
from broker.identity import (
    client_ip, complete_otp_login, lockout_response, mark_otp_verified, otp_attempt_allowed,
    register_otp_failure, step_up_required, verify_otp,
)
from broker.models import AuditEvent, User

BACKUP_CODE_COUNT = 10
_BACKUP_PENDING = "airlock_backup_codes_pending"


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


# --- helpers -------------------------------------------------------------------


def safe_next(request: HttpRequest, fallback: str = "home") -> str:
    """The ?next= target if it is a path on this site, else `fallback`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if _is_local_path(request, target):
        return target
    return reverse(fallback)


def _is_local_path(request: HttpRequest, target: str) -> bool:
    return (
        target.startswith("/") and not target.startswith("//") and "\\" not in target
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    )


def _with_next(name: str, request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    url = reverse(name)
    return f"{url}?{urlencode({'next': target})}" if _is_local_path(request, target) else url


def _posted(request: HttpRequest) -> Any:
    """The form data of a POST (even an empty one), None for a GET: an empty
    POST must show "enter ..." errors, not a blank form."""
    return request.POST if request.method == "POST" else None


def _refuse_locked(request: HttpRequest) -> HttpResponse:
    """django-axes has locked this user or address: end the half-signed-in
    session and say so."""
    logout(request)
    return lockout_response(request)


# --- signing in ------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Step one: username and password. A correct password gives a session
    that can only reach the OTP step (or enrolment)."""
    if request.user.is_authenticated:
        if request.user.is_verified():
            return redirect(safe_next(request))
        return redirect(_with_next("login-otp", request))
    target = request.POST.get("next") or request.GET.get("next") or ""
    unsafe_next = bool(target) and not _is_local_path(request, target)
    form = LoginForm(request, data=_posted(request))
    if request.method == "POST" and form.is_valid():
        login(request, form.get_user())
        return redirect(_with_next("login-otp", request))
    return render(request, "registration/login.html", {
        "form": form, "next": "" if unsafe_next else target, "unsafe_next": unsafe_next,
    })


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def login_otp(request: HttpRequest) -> HttpResponse:
    """Step two: a code from the authenticator, or a backup code."""
    user = request.user
    if user.is_verified():
        return redirect(safe_next(request))
    if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        return redirect("enrol")
    if not otp_attempt_allowed(request, user):
        return _refuse_locked(request)
    form = OTPForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        device, error = verify_otp(user, form.cleaned_data["code"])
        if device is not None:
            complete_otp_login(request, device)
            audit.record("login.succeeded", actor=user, target=f"user:{user.username}",
                         source_ip=client_ip(request),
                         data={"factor": "backup_code" if isinstance(device, StaticDevice) else "totp"})
            return redirect(safe_next(request))
        if register_otp_failure(request, user, step="login"):
            return _refuse_locked(request)
        form.add_error("code", error)
    return render(request, "registration/otp.html", {"form": form, "next": _next_value(request)})


@never_cache
@require_http_methods(["GET", "POST"])
def login_step_up(request: HttpRequest) -> HttpResponse:
    """Confirm a fresh code before a sensitive action (identity.step_up_required)."""
    user = request.user
    if not otp_attempt_allowed(request, user):
        return _refuse_locked(request)
    form = OTPForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        device, error = verify_otp(user, form.cleaned_data["code"])
        if device is not None:
            mark_otp_verified(request)
            audit.record("otp.step_up", actor=user, target=f"user:{user.username}",
                         source_ip=client_ip(request))
            return redirect(safe_next(request))
        if register_otp_failure(request, user, step="step-up"):
            return _refuse_locked(request)
        form.add_error("code", error)
    return render(request, "registration/step_up.html", {"form": form, "next": _next_value(request)})


def _next_value(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    return target if _is_local_path(request, target) else ""


@never_cache
@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        logout(request)
        messages.info(request, "You are signed out.")
        return redirect("login")
    return render(request, "registration/logout.html", {})


# --- invitations and enrolment ------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The one-time link from the invitation email: choose a password."""
    try:
        found = invitations.find(token, source_ip=client_ip(request))
    except invitations.InvitationError as e:
        return render(request, "registration/invitation_invalid.html",
                      {"message": str(e), "reason": e.reason}, status=410)
    # Someone already signed in here is replaced by the new account only when
    # the form is sent (login() starts a fresh session); a mere visit to a
    # link never signs anyone out.
    future = User(username=found.username, email=found.email)
    form = SetPasswordForm(future, _posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            user = invitations.accept(found, form.cleaned_data["password1"],
                                      source_ip=client_ip(request))
        except invitations.InvitationError as e:
            return render(request, "registration/invitation_invalid.html",
                          {"message": str(e), "reason": e.reason}, status=410)
        login(request, user, backend="broker.identity.VendorContractBackend")
        return redirect("enrol")
    return render(request, "registration/invitation.html", {
        "form": form, "invitation": found, "role": invitations.role_label(found),
    })


def _qr_svg(data: str) -> str:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    # Inline in the page: drop the XML declaration.
    return svg[svg.index("<svg"):]


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """Enrol the authenticator app: QR code (drawn here, no third party)
    and the secret as text, confirmed with one code."""
    user = request.user
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        # Enrolment never adds a second authenticator to a half-signed-in
        # session: that would bypass the OTP step.
        return redirect("profile" if user.is_verified() else "login-otp")
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    form = EnrolForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"].replace(" ", "")
        if not device.verify_is_allowed()[0]:
            form.add_error("code", "Too many wrong codes in a row. Wait a few seconds, then "
                                   "enter the newest code from your app.")
        elif device.verify_token(code):
            with transaction.atomic():
                confirmed = TOTPDevice.objects.filter(pk=device.pk, confirmed=False).update(confirmed=True)
                if confirmed == 1:
                    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
            device.refresh_from_db()
            complete_otp_login(request, device)
            audit.record("enrolment", actor=user, target=f"user:{user.username}",
                         source_ip=client_ip(request), data={"device": "totp"})
            request.session[_BACKUP_PENDING] = True
            return redirect("enrol-backup-codes")
        else:
            _enrol_failed(request, form)
    secret = device.config_url.split("secret=")[1].split("&")[0]
    return render(request, "registration/enrol.html", {
        "form": form, "qr_svg": _qr_svg(device.config_url), "secret": secret,
        "secret_groups": [secret[i:i + 4] for i in range(0, len(secret), 4)],
    })


def _enrol_failed(request: HttpRequest, form: EnrolForm) -> None:
    audit.record("otp.failed", actor=request.user, target=f"user:{request.user.username}",
                 source_ip=client_ip(request), data={"step": "enrolment"})
    form.add_error("code", "That code does not match. Check that the app's clock is right "
                           "and enter the code it shows now.")


def _new_backup_codes(user: User) -> list[str]:
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(
            user=user, name="Backup codes", defaults={"confirmed": True})
        StaticDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.token_set.all().delete()
        codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=c) for c in codes)
        if not device.confirmed:
            StaticDevice.objects.filter(pk=device.pk).update(confirmed=True)
    return codes


@never_cache
@login_required
@require_http_methods(["GET"])
def enrol_backup_codes(request: HttpRequest) -> HttpResponse:
    """Backup codes, shown once: they are made when this page is shown
    after enrolment or a regeneration, and never shown again."""
    user = request.user
    if not user.is_verified():
        return redirect(_with_next("login-otp", request))
    if not request.session.pop(_BACKUP_PENDING, False):
        return render(request, "registration/backup_codes.html", {"codes": None})
    codes = _new_backup_codes(user)
    audit.record("backup_codes.created", actor=user, target=f"user:{user.username}",
                 source_ip=client_ip(request), data={"count": len(codes)})
    # never_cache marks the response no-store: the codes stay out of caches.
    return render(request, "registration/backup_codes.html", {"codes": codes})


# --- profile ---------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """Change password; links to the step-up actions."""
    user = request.user
    form = PasswordChangeForm(user, _posted(request))
    if request.method == "POST" and form.is_valid():
        form.save()
        update_session_auth_hash(request, user)
        audit.record("password.changed", actor=user, target=f"user:{user.username}",
                     source_ip=client_ip(request))
        messages.success(request, "Your password is changed.")
        return redirect("profile")
    static = StaticDevice.objects.filter(user=user, confirmed=True).first()
    return render(request, "registration/profile.html", {
        "form": form,
        "totp": TOTPDevice.objects.filter(user=user, confirmed=True).first(),
        "backup_codes_left": static.token_set.count() if static else 0,
    })


@never_cache
@login_required
@step_up_required
@require_http_methods(["GET", "POST"])
def profile_totp_reset(request: HttpRequest) -> HttpResponse:
    """Remove the authenticator (and backup codes) and enrol a new one."""
    user = request.user
    if request.method == "POST":
        with transaction.atomic():
            TOTPDevice.objects.filter(user=user).delete()
            StaticDevice.objects.filter(user=user).delete()
            audit.record("totp.reset", actor=user, target=f"user:{user.username}",
                         source_ip=client_ip(request))
        return redirect("enrol")
    return render(request, "registration/totp_reset.html", {})


@never_cache
@login_required
@step_up_required
@require_POST
def profile_backup_codes(request: HttpRequest) -> HttpResponse:
    """Replace the backup codes; the old ones stop working."""
    request.session[_BACKUP_PENDING] = True
    return redirect("enrol-backup-codes")


# --- home pages ------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """One page; a section per role the user holds (broker/home_<role>.html)."""
    return render(request, "broker/home.html", {"role_templates": [
        f"broker/home_{role}.html" for role in request.user.roles
    ]})


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
    form = InvitationForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        role = data["role"]
        invitation, _token = invitations.invite(
            email=data["email"], username=data["username"], invited_by=request.user,
            vendor=data["vendor"], approver_groups=data["approver_groups"],
            is_auditor=role == InvitationForm.Role.AUDITOR,
            is_staff=role == InvitationForm.Role.ADMIN, source_ip=client_ip(request),
        )
        messages.success(request, f"Invitation sent to {invitation.email}. The link works once "
                                  f"and expires in {int(settings.INVITATION_TTL.total_seconds() // 3600)} hours.")
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
            events = (events.filter(action__startswith=action) if action.endswith(".")
                      else events.filter(action=action))
        if data["since"]:
            events = events.filter(at__gte=datetime.combine(data["since"], dt_time.min, dt_timezone.utc))
        if data["until"]:
            events = events.filter(at__lte=datetime.combine(data["until"], dt_time.max, dt_timezone.utc))
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "broker/audit_trail.html", {
        "form": form, "page": page, "problem": audit.verify(), "query": query.urlencode(),
    })


# --- errors ----------------------------------------------------------------------


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(request, "403_csrf.html", {}, status=403)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: say which kind of bad request it was."""
    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        return render(request, "413.html", {
            "limit_kib": settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024,
        }, status=413)
    context: dict[str, Any] = {"unknown_host": isinstance(exception, DisallowedHost)}
    return render(request, "400.html", context, status=400)
