"""Signing in and keeping a second factor: password, TOTP, step-up, invitations,
enrolment, backup codes and the profile page. Thin views over broker/identity.py."""

from __future__ import annotations

import qrcode
import qrcode.image.svg
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from broker import audit, invitations
from broker.identity import (
    client_ip,
    complete_otp_login,
    lockout_response,
    mark_otp_verified,
    otp_attempt_allowed,
    register_otp_failure,
    step_up_required,
    verify_otp,
)
from broker.models import StaticDevice, StaticToken, TOTPDevice, User
from broker.pages.forms import (
    EnrolForm,
    LoginForm,
    OTPForm,
    SetPasswordForm,
)
from broker.pages.guards import is_local_path, posted, safe_next, with_next

BACKUP_CODE_COUNT = 10
_BACKUP_PENDING = "airlock_backup_codes_pending"


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
        return redirect(with_next("login-otp", request))
    target = request.POST.get("next") or request.GET.get("next") or ""
    unsafe_next = bool(target) and not is_local_path(request, target)
    form = LoginForm(request, data=posted(request))
    if request.method == "POST" and form.is_valid():
        login(request, form.get_user())
        return redirect(with_next("login-otp", request))
    return render(
        request,
        "registration/login.html",
        {
            "form": form,
            "next": "" if unsafe_next else target,
            "unsafe_next": unsafe_next,
        },
    )


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
    form = OTPForm(posted(request))
    if request.method == "POST" and form.is_valid():
        device, error = verify_otp(user, form.cleaned_data["code"])
        if device is not None:
            complete_otp_login(request, device)
            audit.record(
                "login.succeeded",
                actor=user,
                target=f"user:{user.username}",
                source_ip=client_ip(request),
                data={"factor": "backup_code" if isinstance(device, StaticDevice) else "totp"},
            )
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
    form = OTPForm(posted(request))
    if request.method == "POST" and form.is_valid():
        device, error = verify_otp(user, form.cleaned_data["code"])
        if device is not None:
            mark_otp_verified(request)
            audit.record(
                "otp.step_up",
                actor=user,
                target=f"user:{user.username}",
                source_ip=client_ip(request),
            )
            return redirect(safe_next(request))
        if register_otp_failure(request, user, step="step-up"):
            return _refuse_locked(request)
        form.add_error("code", error)
    return render(
        request, "registration/step_up.html", {"form": form, "next": _next_value(request)}
    )


def _next_value(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    return target if is_local_path(request, target) else ""


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
        return render(
            request,
            "registration/invitation_invalid.html",
            {"message": str(e), "reason": e.reason},
            status=410,
        )
    # Someone already signed in here is replaced by the new account only when
    # the form is sent (login() starts a fresh session); a mere visit to a
    # link never signs anyone out.
    future = User(username=found.username, email=found.email)
    form = SetPasswordForm(future, posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            user = invitations.accept(
                found, form.cleaned_data["password1"], source_ip=client_ip(request)
            )
        except invitations.InvitationError as e:
            return render(
                request,
                "registration/invitation_invalid.html",
                {"message": str(e), "reason": e.reason},
                status=410,
            )
        login(request, user, backend="broker.identity.VendorContractBackend")
        return redirect("enrol")
    return render(
        request,
        "registration/invitation.html",
        {
            "form": form,
            "invitation": found,
            "role": invitations.role_label(found),
        },
    )


def _qr_svg(data: str) -> str:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    # Inline in the page: drop the XML declaration.
    return svg[svg.index("<svg") :]


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
    form = EnrolForm(posted(request))
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"].replace(" ", "")
        if not device.verify_is_allowed()[0]:
            form.add_error(
                "code",
                "Too many wrong codes in a row. Wait a few seconds, then "
                "enter the newest code from your app.",
            )
        elif device.verify_token(code):
            with transaction.atomic():
                confirmed = TOTPDevice.objects.filter(pk=device.pk, confirmed=False).update(
                    confirmed=True
                )
                if confirmed == 1:
                    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
            device.refresh_from_db()
            complete_otp_login(request, device)
            audit.record(
                "enrolment",
                actor=user,
                target=f"user:{user.username}",
                source_ip=client_ip(request),
                data={"device": "totp"},
            )
            request.session[_BACKUP_PENDING] = True
            return redirect("enrol-backup-codes")
        else:
            _enrol_failed(request, form)
    secret = device.config_url.split("secret=")[1].split("&")[0]
    return render(
        request,
        "registration/enrol.html",
        {
            "form": form,
            "qr_svg": _qr_svg(device.config_url),
            "secret": secret,
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
        },
    )


def _enrol_failed(request: HttpRequest, form: EnrolForm) -> None:
    audit.record(
        "otp.failed",
        actor=request.user,
        target=f"user:{request.user.username}",
        source_ip=client_ip(request),
        data={"step": "enrolment"},
    )
    form.add_error(
        "code",
        "That code does not match. Check that the app's clock is right "
        "and enter the code it shows now.",
    )


def _new_backup_codes(user: User) -> list[str]:
    with transaction.atomic():
        device, _ = StaticDevice.objects.get_or_create(
            user=user, name="Backup codes", defaults={"confirmed": True}
        )
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
        return redirect(with_next("login-otp", request))
    if not request.session.pop(_BACKUP_PENDING, False):
        return render(request, "registration/backup_codes.html", {"codes": None})
    codes = _new_backup_codes(user)
    audit.record(
        "backup_codes.created",
        actor=user,
        target=f"user:{user.username}",
        source_ip=client_ip(request),
        data={"count": len(codes)},
    )
    # never_cache marks the response no-store: the codes stay out of caches.
    return render(request, "registration/backup_codes.html", {"codes": codes})


# --- profile ---------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    """Change password; links to the step-up actions."""
    user = request.user
    form = PasswordChangeForm(user, posted(request))
    if request.method == "POST" and form.is_valid():
        form.save()
        update_session_auth_hash(request, user)
        audit.record(
            "password.changed",
            actor=user,
            target=f"user:{user.username}",
            source_ip=client_ip(request),
        )
        messages.success(request, "Your password is changed.")
        return redirect("profile")
    static = StaticDevice.objects.filter(user=user, confirmed=True).first()
    return render(
        request,
        "registration/profile.html",
        {
            "form": form,
            "totp": TOTPDevice.objects.filter(user=user, confirmed=True).first(),
            "backup_codes_left": static.token_set.count() if static else 0,
        },
    )


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
            audit.record(
                "totp.reset",
                actor=user,
                target=f"user:{user.username}",
                source_ip=client_ip(request),
            )
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
