"""In Debian's chromium: an invited vendor sets a password, enrols TOTP from
the secret shown next to the QR code, signs in with a computed code and
lands on the vendor home; a wrong code shows an error and leaves the
session signed out."""

from __future__ import annotations

import base64

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import connections
from django.urls import reverse
from django_otp.oath import totp

from broker import invitations
from broker.models import AuditEvent
from tests.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pump-station-lantern-31"


def code_for(secret_b32: str, steps_ahead: int = 0) -> str:
    """What an authenticator app holding this secret shows (now, or after
    `steps_ahead` 30-second steps)."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    return str(totp(key, drift=steps_ahead)).zfill(6)


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    # ORM calls made while Playwright's loop runs get their own connection
    # (asgiref's context-local); close it here, or PostgreSQL cannot drop
    # the test database.
    connections.close_all()
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"login-{name}.png"), full_page=True)


def server_session(page) -> SessionStore:
    cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    return SessionStore(session_key=cookie["value"])


def sign_in_with_password(page, base: str) -> None:
    page.goto(base + reverse("login"))
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("login-otp") + "*")


def test_an_invited_vendor_enrols_signs_in_and_a_wrong_code_keeps_them_out(
    live_server, page, make_vendor, make_user
):
    base = live_server.url
    admin = make_user("root", is_staff=True, is_superuser=True)
    vendor = make_vendor("Acme Automation")
    _, token = invitations.invite(
        email="alice@acme.example", username="alice", vendor=vendor, invited_by=admin
    )

    # The invitation link: choose a password.
    page.goto(base + reverse("invitation", args=[token]))
    assert "Acme Automation" in page.inner_text("main")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    shot(page, "1-invitation")
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("enrol"))

    # Enrolment: the QR code is inline SVG; the secret is next to it.
    assert page.locator("figure.qr svg").count() == 1
    secret = page.get_attribute("#totp-secret", "data-secret")
    assert secret and secret.replace(" ", "") == page.inner_text("#totp-secret").replace(" ", "")
    shot(page, "2-enrol")
    page.fill("#id_code", code_for(secret))
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("enrol-backup-codes"))
    assert page.locator("#backup-codes li").count() == 10
    shot(page, "3-backup-codes")
    page.click("#continue")
    page.wait_for_url(base + reverse("home"))
    page.click("text=Sign out")
    page.wait_for_url(base + reverse("login"))

    # Sign in: password, then a computed code (the next step's: the code used
    # at enrolment cannot be used twice).
    sign_in_with_password(page, base)
    shot(page, "4-otp-step")
    page.fill("#id_code", code_for(secret, steps_ahead=1))
    page.click("button[type=submit].primary")
    page.wait_for_url(base + reverse("home"))
    assert "Vendor · Acme Automation" in page.inner_text("main")
    assert server_session(page).get("otp_device_id")
    shot(page, "5-vendor-home")
    page.click("text=Sign out")
    page.wait_for_url(base + reverse("login"))

    # A wrong code: an error, and the session stays signed out of the portal.
    sign_in_with_password(page, base)
    wrong = str((int(code_for(secret)) + 500_000) % 1_000_000).zfill(6)
    page.fill("#id_code", wrong)
    page.click("button[type=submit].primary")
    page.wait_for_load_state()
    assert "That code is not right" in page.inner_text("main")
    shot(page, "6-wrong-code")
    session = server_session(page)
    assert "otp_device_id" not in session
    assert AuditEvent.objects.filter(action="otp.failed", actor="alice").count() == 1
    page.goto(base + reverse("home"))
    assert page.url.startswith(base + reverse("login-otp"))
    assert "Vendor · Acme Automation" not in page.inner_text("main")
