"""MFA deny-by-default: every route needs an OTP-verified session except
the explicit exemptions; the admin is an OTPAdminSite; step-up works."""

from __future__ import annotations

import time
import uuid

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RoutePattern
from django_otp.admin import OTPAdminSite

from broker.middleware import OTP_EXEMPT_VIEWS
from broker.models import TOTPDevice
from tests.conftest import TEST_PASSWORD, totp_now

pytestmark = pytest.mark.django_db

SAMPLES = {"uuid": str(uuid.uuid4()), "str": "sample", "slug": "sample", "int": "1", "path": "x"}


def routed_paths():
    """(view name, path) for every route of the portal, with sample values
    for converters; the admin is represented by its index."""
    found = []

    def walk(patterns, prefix, namespace):
        for p in patterns:
            if isinstance(p, URLResolver):
                if p.namespace == "admin":
                    continue
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                walk(p.url_patterns, prefix + _route(p.pattern), ns)
            elif isinstance(p, URLPattern) and isinstance(p.pattern, RoutePattern):
                if p.name:
                    found.append((namespace + p.name, "/" + prefix + _route(p.pattern)))

    def _route(pattern):
        text = str(pattern)
        for conv, value in SAMPLES.items():
            while f"<{conv}:" in text:
                start = text.index(f"<{conv}:")
                text = text[:start] + value + text[text.index(">", start) + 1 :]
        return text

    walk(get_resolver().url_patterns, "", "")
    found.append(("admin:index", reverse("admin:index")))
    return found


PROTECTED = [(name, path) for name, path in routed_paths() if name not in OTP_EXEMPT_VIEWS]


def test_the_exemptions_are_exactly_the_sign_in_enrolment_and_machine_views():
    assert OTP_EXEMPT_VIEWS == {
        "login",
        "login-otp",
        "logout",
        "enrol",
        "enrol-backup-codes",
        "invitation",
        "signals-intake",
        "healthz",
    }


def test_there_are_protected_routes_to_check():
    names = {name for name, _ in PROTECTED}
    assert {"home", "profile", "login-step-up", "audit-trail", "invite", "admin:index"} <= names


@pytest.mark.parametrize("name,path", PROTECTED)
def test_anonymous_visitors_are_sent_to_sign_in(client, name, path):
    for method in (client.get, client.post):
        response = method(path)
        assert response.status_code == 302, (name, path, response.status_code)
        assert response["Location"].startswith(reverse("login") + "?next="), name


@pytest.mark.parametrize("name,path", PROTECTED)
def test_a_session_past_the_password_only_is_sent_to_the_otp_step(client, make_user, name, path):
    user = make_user("halfway", is_staff=True, is_superuser=True, is_auditor=True)
    client.post(reverse("login"), {"username": user.username, "password": TEST_PASSWORD})
    response = client.get(path)
    assert response.status_code == 302, (name, path)
    assert response["Location"].startswith(reverse("login-otp")), name


def test_a_session_past_the_password_without_authenticator_is_sent_to_enrolment(client, make_user):
    user = make_user("fresh", totp=False)
    client.post(reverse("login"), {"username": user.username, "password": TEST_PASSWORD})
    assert client.get(reverse("home"))["Location"] == reverse("enrol")
    assert client.get(reverse("profile"))["Location"] == reverse("enrol")


def test_a_verified_session_reaches_the_pages(verified_client, make_vendor_user):
    client = verified_client(make_vendor_user("alice"))
    assert client.get(reverse("home")).status_code == 200
    assert client.get(reverse("profile")).status_code == 200


def test_exempt_views_answer_without_a_session(client, db):
    assert client.get(reverse("healthz")).status_code == 200
    assert client.get(reverse("login")).status_code == 200
    assert client.get(reverse("logout")).status_code == 200
    assert client.get(reverse("invitation", args=["nothing"])).status_code == 410


def test_unknown_paths_are_a_plain_404_not_a_redirect(client, db):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Not found" in response.content


def test_the_admin_is_an_otp_admin_site(client, make_user, verified_client):
    assert isinstance(admin.site, OTPAdminSite)
    staff = make_user("root", is_staff=True, is_superuser=True)
    # The admin's own login view is not mistaken for ours: no exemption.
    response = client.get(reverse("admin:login"))
    assert response["Location"].startswith(reverse("login"))
    client = verified_client(staff)
    assert client.get(reverse("admin:index")).status_code == 200


def test_the_admin_never_shows_a_totp_seed(verified_client, make_user):
    staff = make_user("root", is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.get(user=staff)
    client = verified_client(staff)
    page = client.get(reverse("admin:broker_totpdevice_change", args=[device.pk]))
    assert page.status_code == 200
    assert device.key not in page.content.decode()
    listing = client.get(reverse("admin:broker_totpdevice_changelist"))
    assert device.key not in listing.content.decode()


def test_non_staff_cannot_open_the_admin_even_when_verified(verified_client, make_vendor_user):
    client = verified_client(make_vendor_user("alice"))
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert "admin/login" in response["Location"]


def test_step_up_is_asked_when_the_last_code_is_older_than_the_setting(
    verified_client, make_vendor_user, settings
):
    user = make_vendor_user("alice")
    client = verified_client(user)
    assert client.get(reverse("profile-totp-reset")).status_code == 200
    session = client.session
    session["airlock_otp_at"] = time.time() - settings.STEP_UP_SECONDS - 1
    session.save()
    response = client.get(reverse("profile-totp-reset"))
    assert response["Location"] == reverse("login-step-up") + "?next=%2Fprofile%2Ftotp%2Freset%2F"
    page = client.get(response["Location"])
    assert b"Confirm it is you" in page.content
    device = TOTPDevice.objects.get(user=user)
    client.post(
        reverse("login-step-up"), {"code": totp_now(device), "next": "/profile/totp/reset/"}
    )
    assert client.get(reverse("profile-totp-reset")).status_code == 200


def test_the_step_up_page_does_not_follow_next_to_another_site(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    device = TOTPDevice.objects.get(user=user)
    response = client.post(
        reverse("login-step-up"), {"code": totp_now(device), "next": "https://elsewhere.example/"}
    )
    assert response["Location"] == reverse("home")


def test_the_navigation_shows_only_routed_pages_for_the_users_roles(
    verified_client, make_vendor_user, make_user
):
    vendor_page = verified_client(make_vendor_user("alice")).get(reverse("home"))
    nav = vendor_page.context["nav_items"]
    labels = [item["label"] for item in nav]
    assert "Audit trail" not in labels and "Admin" not in labels
    for item in nav:
        assert item["url"].startswith("/")
    auditor = make_user("audrey", is_auditor=True)
    from django.test import Client

    other = Client()
    device = TOTPDevice.objects.get(user=auditor)
    other.post(reverse("login"), {"username": "audrey", "password": TEST_PASSWORD})
    other.post(reverse("login-otp"), {"code": totp_now(device)})
    page = other.get(reverse("home"))
    labels = [item["label"] for item in page.context["nav_items"]]
    assert "Audit trail" in labels
    assert f'href="{reverse("audit-trail")}"' in page.content.decode()


def test_a_half_signed_in_page_shows_no_navigation(client, make_vendor_user):
    make_vendor_user("alice")
    client.post(reverse("login"), {"username": "alice", "password": TEST_PASSWORD})
    page = client.get(reverse("login-otp"))
    assert page.context["nav_items"] == []


def test_the_code_used_to_sign_in_cannot_be_used_again_for_step_up(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    code = totp_now(device)
    client.post(reverse("login"), {"username": "alice", "password": TEST_PASSWORD})
    client.post(reverse("login-otp"), {"code": code})
    session = client.session
    session["airlock_otp_at"] = time.time() - 3600
    session.save()
    response = client.post(reverse("login-step-up"), {"code": code, "next": "/profile/totp/reset/"})
    assert response.status_code == 200
    assert b"already used" in response.content
    assert client.get(reverse("profile-totp-reset"))["Location"].startswith(
        reverse("login-step-up")
    )
