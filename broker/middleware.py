"""Request middleware: MFA deny-by-default and the absolute session lifetime,
plus the logging filter that keeps refused requests' tracebacks out of logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django.urls import Resolver404, resolve, reverse
from django.utils.http import urlencode

# Views a person may reach without an OTP-verified session. Everything else
# needs one; machine endpoints listed here authenticate themselves, and the
# exempt person-facing views check what they need themselves (an
# authenticated user for the OTP step and enrolment, a token for invitations).
# Names are full view names (namespace included), so the admin's "admin:login"
# is not mistaken for ours.
OTP_EXEMPT_VIEWS = {
    "login",
    "login-otp",
    "logout",
    "enrol",
    "enrol-backup-codes",
    "invitation",
    "signals-intake",
    "healthz",
}


class RequireOTPMiddleware:
    """After django-otp's OTPMiddleware: deny every view to a session that
    has not passed the OTP step, except the explicit exemptions above."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(settings.STATIC_URL):
            return self.get_response(request)
        try:
            name = resolve(request.path_info).view_name
        except Resolver404:
            # Unknown paths get the plain 404 page; nothing is behind them.
            return self.get_response(request)
        user = request.user
        if name in OTP_EXEMPT_VIEWS or (user.is_authenticated and user.is_verified()):
            return self.get_response(request)
        back = urlencode({"next": request.get_full_path()})
        if not user.is_authenticated:
            return redirect(f"{resolve_url(settings.LOGIN_URL)}?{back}")
        from broker.models import TOTPDevice

        # Backup codes alone are not an enrolment: the authenticator comes first.
        if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            return redirect("enrol")
        return redirect(f"{reverse('login-otp')}?{back}")


class SessionLifetimeMiddleware:
    """Idle expiry is SESSION_COOKIE_AGE with SESSION_SAVE_EVERY_REQUEST; this
    adds the absolute limit: a session older than SESSION_ABSOLUTE_SECONDS
    ends whatever its activity. A signed-in session without a start time
    (which every login records) is ended too: fail closed."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        started = session.get("airlock_started_at")
        signed_in = "_auth_user_id" in session
        too_old = started is not None and time.time() - started > settings.SESSION_ABSOLUTE_SECONDS
        if too_old or (signed_in and started is None):
            if hasattr(request, "user"):
                logout(request)
            else:
                session.flush()
        return self.get_response(request)


class WithoutTraceback(logging.Filter):
    """Refused requests (unknown Host header, oversized body) are logged as
    one line: the traceback says nothing about the client's mistake and
    floods the log when someone scans the portal."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True
