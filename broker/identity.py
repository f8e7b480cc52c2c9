"""Identity: who is signing in, from where, and whether they recently
proved their second factor.

- `client_ip()` is the address django-axes throttles on: REMOTE_ADDR, unless
  the request came from a proxy named in AIRLOCK_TRUSTED_PROXIES.
- `VendorContractBackend` refuses users of a vendor whose contract ended.
- `mark_otp_verified()` / `step_up_required` implement step-up: sensitive
  actions need an OTP verified in the last STEP_UP_SECONDS.
- `verify_otp()`, `register_otp_failure()` and `complete_otp_login()` are
  the OTP step: a wrong code counts with django-axes exactly like a wrong
  password, and a TOTP code is accepted once.
- Receivers for Django's and django-axes's auth events write the audit trail.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django_otp import login as otp_login
from django_otp.models import Device

from broker import audit
from broker.models import StaticDevice, TOTPDevice


def client_ip(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "") or "0.0.0.0"
    if remote in settings.TRUSTED_PROXIES:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        # The right-most address is the one our trusted proxy saw.
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            try:
                return str(ipaddress.ip_address(hops[-1]))
            except ValueError:
                pass
    return remote


class VendorContractBackend(ModelBackend):
    """The model backend, refusing users whose vendor contract has ended.

    A session that outlives the contract ends too: get_user() asks
    user_can_authenticate() on every request."""

    def user_can_authenticate(self, user: Any) -> bool:
        if not super().user_can_authenticate(user):
            return False
        vendor = getattr(user, "vendor", None)
        return vendor is None or vendor.is_contract_valid(timezone.now())

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None or request is None or username is None or password is None:
            return user
        # Only someone who knows the password learns that the contract ended;
        # anyone else sees the plain "wrong username or password".
        candidate = self._contract_ended_user(username, password)
        if candidate is not None:
            request.airlock_refusal = REFUSAL_CONTRACT_ENDED  # type: ignore[attr-defined]
            request.airlock_refused_vendor = candidate.vendor.name  # type: ignore[attr-defined]
            # PermissionDenied stops the other backends; authenticate() then
            # sends user_login_failed, which django-axes counts.
            raise PermissionDenied("vendor contract ended")
        return None

    def _contract_ended_user(self, username: str, password: str) -> Any:
        UserModel = get_user_model()
        try:
            user = UserModel._default_manager.get_by_natural_key(username)
        except UserModel.DoesNotExist:
            return None
        if not (user.is_active and user.vendor_id and user.check_password(password)):
            return None
        return None if user.vendor.is_contract_valid(timezone.now()) else user


REFUSAL_CONTRACT_ENDED = "contract_ended"


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return render(
        request,
        "registration/locked_out.html",
        {"cooloff_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)},
        status=429,
    )


# --- step-up --------------------------------------------------------------


def mark_otp_verified(request: HttpRequest) -> None:
    """Call when the user has just proved a fresh OTP code."""
    request.session["airlock_otp_at"] = time.time()


def has_recent_otp(request: HttpRequest) -> bool:
    at = request.session.get("airlock_otp_at")
    return at is not None and time.time() - at <= settings.STEP_UP_SECONDS


def step_up_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorator: the view needs an OTP verified in the last STEP_UP_SECONDS.
    Otherwise the user is sent to the step-up page and brought back after.
    A POST that arrives without a recent OTP is not acted on."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if has_recent_otp(request):
            return view(request, *args, **kwargs)
        back = request.get_full_path()
        return redirect(f"{reverse('login-step-up')}?{urlencode({'next': back})}")

    return wrapper


# --- the OTP step -------------------------------------------------------------

# Authenticator codes are digits; django-otp backup codes are letters and digits.
_TOTP_SHAPE = re.compile(r"^\d{6,8}$")


def normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "").lower()


def otp_device_for(user: Any, code: str) -> Device | None:
    """The confirmed device that `code` is meant for: the authenticator for a
    digit code, the backup-code list otherwise. Checking only that one keeps
    a wrong code from counting as a failure on every device."""
    model = TOTPDevice if _TOTP_SHAPE.match(code) else StaticDevice
    return model.objects.filter(user=user, confirmed=True).first()


def verify_otp(user: Any, code: str) -> tuple[Device | None, str]:
    """Check `code` for `user`. Returns (device, "") on success, or
    (None, sentence) saying what was wrong. A TOTP code that was already
    accepted once is refused (TOTPDevice keeps the last time step used)."""
    code = normalise_code(code)
    if not code:
        return None, "Enter the code from your authenticator app."
    device = otp_device_for(user, code)
    if device is None:
        if _TOTP_SHAPE.match(code):
            return None, "Your account has no authenticator enrolled."
        return None, "That code is not right. Enter the 6-digit code from your authenticator app."
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        return None, (
            "Too many wrong codes in a row. Wait a few seconds, then enter "
            "the newest code from your authenticator app."
        )
    if device.verify_token(code):
        return device, ""
    if isinstance(device, TOTPDevice):
        return None, (
            "That code is not right, or it was already used. Wait for the next "
            "code in your authenticator app and try again."
        )
    return None, "That backup code is not right or was already used."


def otp_attempt_allowed(request: HttpRequest, user: Any) -> bool:
    """False while django-axes has the user or the address locked out."""
    return AxesProxyHandler.is_allowed(request, {"username": user.get_username()})


def register_otp_failure(request: HttpRequest, user: Any, *, step: str) -> bool:
    """Audit a wrong OTP and count it with django-axes exactly like a wrong
    password (same username and address counters). True when this failure
    locked the user or the address out."""
    audit.record(
        "otp.failed",
        actor=user,
        target=f"user:{user.get_username()}",
        source_ip=client_ip(request),
        data={"step": step},
    )
    AxesProxyHandler.user_login_failed(
        sender=register_otp_failure,
        credentials={"username": user.get_username()},
        request=request,
    )
    return bool(getattr(request, "axes_locked_out", False))


def complete_otp_login(request: HttpRequest, device: Device) -> None:
    """The user proved the second factor: mark the session verified, start
    the step-up clock, and clear the user's failure count."""
    otp_login(request, device)
    # A new session key once fully signed in (the half-signed-in key is dropped).
    request.session.cycle_key()
    mark_otp_verified(request)
    AxesProxyHandler.reset_attempts(username=request.user.get_username())


# --- audit receivers for third-party events ---------------------------------


@receiver(user_logged_in)
def _audit_login(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if request is not None:
        request.session["airlock_started_at"] = time.time()
    audit.record(
        "login.password_ok",
        actor=user,
        target=f"user:{user.get_username()}",
        source_ip=client_ip(request) if request else None,
    )


@receiver(user_logged_out)
def _audit_logout(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(
            "logout",
            actor=user,
            target=f"user:{user.get_username()}",
            source_ip=client_ip(request) if request else None,
        )
    if user is not None and request is not None:
        # Through the one seam into sessions: browser terminals and remote
        # desktops opened from this sign-in end with it.
        from sessions.live.revocation import end_portal_signin

        end_portal_signin(request.session.session_key, by=user)


@receiver(user_login_failed)
def _audit_login_failed(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    refusal = getattr(request, "airlock_refusal", None)
    if refusal == REFUSAL_CONTRACT_ENDED:
        audit.record(
            "login.contract_ended",
            actor=username,
            target=f"user:{username}",
            source_ip=client_ip(request) if request else None,
            data={"vendor": getattr(request, "airlock_refused_vendor", "")},
        )
        return
    data = {"locked_out": True} if getattr(request, "axes_locked_out", False) else {}
    audit.record(
        "login.failed",
        actor=username or "anonymous",
        target=f"user:{username}",
        source_ip=client_ip(request) if request else None,
        data=data,
    )


@receiver(user_locked_out)
def _audit_locked_out(
    sender: Any,
    request: HttpRequest | None = None,
    username: str | None = None,
    ip_address: str | None = None,
    **kwargs: Any,
) -> None:
    """django-axes locked a username or an address out (or refused one that is)."""
    failures = getattr(request, "axes_failures_since_start", None)
    audit.record(
        "login.locked_out",
        actor=username or "anonymous",
        target=f"user:{username or ''}",
        source_ip=ip_address,
        data={"failures": failures} if failures is not None else {},
    )
