"""Sessions and headers: idle and absolute expiry, cookie flags, CSRF, CSP
without inline script, framing and referrer policy, oversized bodies and
unknown Host headers."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from broker.models import AuditEvent
from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"\sstyle\s*=", re.I)


def pages_for(client, make_vendor_user, verified_client):
    anonymous = [client.get(reverse("login"))]
    user = make_vendor_user("alice")
    signed_in = verified_client(user)
    return anonymous + [
        signed_in.get(reverse(name)) for name in ("home", "profile", "login-step-up")
    ]


def test_security_headers_are_on_every_page(client, make_vendor_user, verified_client):
    for response in pages_for(client, make_vendor_user, verified_client):
        assert response.status_code == 200
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Content-Type-Options"] == "nosniff"
        csp = response["Content-Security-Policy"]
        script_src = re.search(r"script-src ([^;]*)", csp).group(1)
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert "frame-ancestors 'none'" in csp


def test_pages_carry_no_inline_script_handlers_or_styles(client, make_vendor_user, verified_client):
    for response in pages_for(client, make_vendor_user, verified_client):
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html)
        assert not INLINE_HANDLER.search(html)
        assert not INLINE_STYLE.search(html)


def test_the_enrolment_page_has_no_inline_script_either(client, make_vendor_user):
    make_vendor_user("fresh", totp=False)
    client.post(reverse("login"), {"username": "fresh", "password": TEST_PASSWORD})
    html = client.get(reverse("enrol")).content.decode()
    assert "<svg" in html
    assert not INLINE_SCRIPT.search(html) and not INLINE_HANDLER.search(html)


def test_the_portal_assets_are_served_locally(client):
    html = client.get(reverse("login")).content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:css|js))"', html)
    assert assets
    for url in assets:
        assert url.startswith("/static/")
        assert client.get(url).status_code == 200


def test_session_and_csrf_cookies_are_http_only_and_same_site(client, make_vendor_user):
    make_vendor_user("alice")
    client.get(reverse("login"))
    response = client.post(reverse("login"), {"username": "alice", "password": TEST_PASSWORD})
    session_cookie = response.cookies["sessionid"]
    assert session_cookie["httponly"] and session_cookie["samesite"] == "Lax"
    csrf_cookie = client.cookies["csrftoken"]
    assert csrf_cookie["httponly"] and csrf_cookie["samesite"] == "Lax"


def test_cookies_are_marked_secure_when_the_setting_says_so(client, make_vendor_user, settings):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    make_vendor_user("alice")
    client.get(reverse("login"))
    response = client.post(reverse("login"), {"username": "alice", "password": TEST_PASSWORD})
    assert response.cookies["sessionid"]["secure"]
    assert client.cookies["csrftoken"]["secure"]


def _settings_in_fresh_process(env: dict[str, str]) -> str:
    code = (
        "import django.conf as c, os; os.environ['DJANGO_SETTINGS_MODULE']='broker.settings';"
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    clean = {
        k: v for k, v in os.environ.items() if k not in {"AIRLOCK_SECURE_COOKIES", "AIRLOCK_DEBUG"}
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        text=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    return result.stdout.strip()


def test_cookies_are_secure_by_default_outside_debug():
    assert _settings_in_fresh_process({}) == "True True"
    assert _settings_in_fresh_process({"AIRLOCK_DEBUG": "1"}) == "False False"


def test_a_form_without_csrf_token_is_refused_with_a_sentence(make_vendor_user):
    make_vendor_user("alice")
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(reverse("login"), {"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert "_auth_user_id" not in strict.session
    assert not AuditEvent.objects.filter(action="login.password_ok").exists()


def test_every_form_on_the_pages_carries_a_csrf_token(client, make_vendor_user, verified_client):
    for response in pages_for(client, make_vendor_user, verified_client):
        html = response.content.decode()
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S | re.I):
            assert "csrfmiddlewaretoken" in form


def test_an_oversized_body_gets_a_clear_413_and_changes_nothing(client, make_vendor_user, settings):
    make_vendor_user("alice")
    big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post(
        reverse("login"), {"username": "alice", "password": TEST_PASSWORD, "padding": big}
    )
    assert response.status_code == 413
    assert b"too large" in response.content
    assert "_auth_user_id" not in client.session
    assert not AuditEvent.objects.exists()


def test_an_oversized_body_on_a_signed_in_form_changes_nothing(
    verified_client, make_vendor_user, settings
):
    user = make_vendor_user("alice")
    client = verified_client(user)
    big = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post(
        reverse("profile"),
        {"old_password": TEST_PASSWORD, "new_password1": big, "new_password2": big},
    )
    assert response.status_code == 413
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


@pytest.fixture
def security_log():
    """What the console handler of django.security writes."""
    handler = next(h for h in logging.getLogger("django.security").handlers if h.filters)
    stream = io.StringIO()
    old = handler.setStream(stream)
    yield stream
    handler.setStream(old)


def test_an_unknown_host_gets_a_clear_400_and_no_traceback_in_the_log(client, security_log):
    response = client.get(reverse("login"), HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert b"does not answer to the host name" in response.content
    log = security_log.getvalue()
    assert "Invalid HTTP_HOST header" in log and "evil.example" in log
    assert "Traceback" not in log


def test_a_signed_in_session_ends_after_30_idle_minutes(verified_client, make_vendor_user):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        client = verified_client(make_vendor_user("alice"))
        assert client.get(reverse("home")).status_code == 200
        traveller.shift(timedelta(minutes=29))
        assert client.get(reverse("home")).status_code == 200
        # Activity slides the idle window.
        traveller.shift(timedelta(minutes=29))
        assert client.get(reverse("home")).status_code == 200
        traveller.shift(timedelta(minutes=31))
        response = client.get(reverse("home"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_a_signed_in_session_ends_after_12_hours_however_active(verified_client, make_vendor_user):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        client = verified_client(make_vendor_user("alice"))
        for _ in range(28):  # 28 x 25 minutes = 11 h 40 min
            traveller.shift(timedelta(minutes=25))
            assert client.get(reverse("home")).status_code == 200
        traveller.shift(timedelta(minutes=25))  # 12 h 05 min
        response = client.get(reverse("home"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
        assert "_auth_user_id" not in client.session


def test_a_signed_in_session_without_a_start_time_is_ended(client, make_vendor_user):
    user = make_vendor_user("alice")
    client.force_login(user)
    session = client.session
    session.pop("airlock_started_at", None)
    session.save()
    response = client.get(reverse("home"))
    assert response["Location"].startswith(reverse("login"))
    assert "_auth_user_id" not in client.session
