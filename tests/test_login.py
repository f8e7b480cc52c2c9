"""Signing in: password step, then OTP step; errors are sentences, change
nothing, and are audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from broker.models import AuditEvent, StaticDevice, StaticToken, TOTPDevice
from tests.conftest import TEST_PASSWORD, totp_now

pytestmark = pytest.mark.django_db


def password_step(client, username, password=TEST_PASSWORD, next_url=None):
    data = {"username": username, "password": password}
    if next_url is not None:
        data["next"] = next_url
    return client.post(reverse("login"), data)


def otp_step(client, code, next_url=None):
    data = {"code": code}
    if next_url is not None:
        data["next"] = next_url
    return client.post(reverse("login-otp"), data)


def actions():
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def test_login_page_has_a_csrf_protected_form(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content
    assert b"Sign in" in response.content


def test_correct_password_leads_to_the_otp_step_not_home(client, make_vendor_user):
    user = make_vendor_user("alice")
    response = password_step(client, "alice")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login-otp"))
    assert client.session["_auth_user_id"] == str(user.pk)
    # Home is out of reach until the code is entered.
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login-otp"))
    assert "login.password_ok" in actions()


def test_no_password_is_kept_in_the_session_between_steps(client, make_vendor_user):
    make_vendor_user("alice")
    password_step(client, "alice")
    stored = repr(dict(client.session.items()))
    assert TEST_PASSWORD not in stored
    assert "password" not in stored.lower()


def test_correct_code_signs_in_and_lands_on_home(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    password_step(client, "alice")
    response = otp_step(client, totp_now(device))
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.session["otp_device_id"] == device.persistent_id
    assert "airlock_otp_at" in client.session
    home = client.get(reverse("home"))
    assert home.status_code == 200
    assert b"Vendor" in home.content
    event = AuditEvent.objects.get(action="login.succeeded")
    assert event.actor == "alice" and event.data == {"factor": "totp"}


def test_wrong_password_shows_a_sentence_changes_nothing_and_is_audited(client, make_vendor_user):
    user = make_vendor_user("alice")
    last_login = user.last_login
    response = password_step(client, "alice", "not the password at all")
    assert response.status_code == 200
    assert b"That username and password do not match" in response.content
    assert "_auth_user_id" not in client.session
    user.refresh_from_db()
    assert user.last_login == last_login
    event = AuditEvent.objects.get(action="login.failed")
    assert event.actor == "alice" and event.source_ip == "127.0.0.1"


def test_unknown_username_gets_the_same_sentence_as_a_wrong_password(client, db):
    response = password_step(client, "nobody")
    assert b"That username and password do not match" in response.content
    assert AuditEvent.objects.filter(action="login.failed", actor="nobody").exists()


def test_wrong_code_shows_a_sentence_leaves_the_session_unverified_and_is_audited(
    client, make_vendor_user
):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    password_step(client, "alice")
    wrong = str((int(totp_now(device)) + 1) % 1_000_000).zfill(6)
    response = otp_step(client, wrong)
    assert response.status_code == 200
    assert b"That code is not right" in response.content
    assert "otp_device_id" not in client.session
    assert client.get(reverse("home")).status_code == 302
    event = AuditEvent.objects.get(action="otp.failed")
    assert event.actor == "alice" and event.data == {"step": "login"}


def test_a_code_already_used_is_refused(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    code = totp_now(device)
    password_step(client, "alice")
    otp_step(client, code)
    device.refresh_from_db()
    used_step = device.last_t
    assert used_step >= 0
    client.post(reverse("logout"))

    password_step(client, "alice")
    response = otp_step(client, code)
    assert response.status_code == 200
    assert b"already used" in response.content
    assert "otp_device_id" not in client.session
    device.refresh_from_db()
    assert device.last_t == used_step
    assert AuditEvent.objects.filter(action="otp.failed", actor="alice").count() == 1


def test_a_backup_code_signs_in_once(client, make_vendor_user):
    user = make_vendor_user("alice")
    static = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    StaticToken.objects.create(device=static, token="abcd2345")
    password_step(client, "alice")
    response = otp_step(client, "ABCD 2345")
    assert response["Location"] == reverse("home")
    assert not StaticToken.objects.filter(device=static).exists()
    assert AuditEvent.objects.get(action="login.succeeded").data == {"factor": "backup_code"}
    client.post(reverse("logout"))

    password_step(client, "alice")
    response = otp_step(client, "abcd2345")
    assert b"backup code is not right or was already used" in response.content
    assert "otp_device_id" not in client.session


def test_a_user_without_an_authenticator_goes_to_enrolment(client, make_vendor_user):
    make_vendor_user("alice", totp=False)
    password_step(client, "alice")
    response = client.get(reverse("login-otp"))
    assert response["Location"] == reverse("enrol")
    assert client.get(reverse("home"))["Location"] == reverse("enrol")


def test_vendor_whose_contract_ended_cannot_sign_in_and_is_told_why(
    client, make_vendor, make_vendor_user
):
    vendor = make_vendor("Acme Automation", contract_ends_at=timezone.now() - timedelta(days=1))
    make_vendor_user("alice", vendor=vendor)
    response = password_step(client, "alice")
    assert response.status_code == 200
    assert b"The contract of Acme Automation with the plant has ended" in response.content
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="login.contract_ended")
    assert event.actor == "alice" and event.data == {"vendor": "Acme Automation"}
    assert not AuditEvent.objects.filter(action="login.password_ok").exists()


def test_contract_ended_is_not_revealed_without_the_right_password(
    client, make_vendor, make_vendor_user
):
    vendor = make_vendor("Acme Automation", contract_ends_at=timezone.now() - timedelta(days=1))
    make_vendor_user("alice", vendor=vendor)
    response = password_step(client, "alice", "wrong password here")
    assert b"contract" not in response.content
    assert AuditEvent.objects.filter(action="login.failed").exists()


def test_a_signed_in_vendor_is_signed_out_when_the_contract_ends(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    assert client.get(reverse("home")).status_code == 200
    user.vendor.contract_ends_at = timezone.now() - timedelta(seconds=1)
    user.vendor.save()
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_next_to_another_site_is_not_followed_and_the_page_says_so(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    page = client.get(reverse("login") + "?next=https://elsewhere.example/steal")
    assert b"wanted to send you to another site" in page.content
    assert b"elsewhere.example" not in page.content
    password_step(client, "alice", next_url="https://elsewhere.example/steal")
    response = otp_step(client, totp_now(device), next_url="https://elsewhere.example/steal")
    assert response["Location"] == reverse("home")


@pytest.mark.parametrize(
    "target", ["//elsewhere.example/", "/\\elsewhere.example", "http:/elsewhere"]
)
def test_next_tricks_that_look_like_paths_are_not_followed(client, make_vendor_user, target):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    password_step(client, "alice", next_url=target)
    response = otp_step(client, totp_now(device), next_url=target)
    assert response["Location"] == reverse("home")


def test_next_to_a_path_on_this_site_is_followed(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    response = password_step(client, "alice", next_url="/profile/")
    assert "next=%2Fprofile%2F" in response["Location"]
    response = otp_step(client, totp_now(device), next_url="/profile/")
    assert response["Location"] == "/profile/"


def test_logout_needs_a_post_and_is_audited(verified_client, make_vendor_user):
    client = verified_client(make_vendor_user("alice"))
    page = client.get(reverse("logout"))
    assert page.status_code == 200
    assert "_auth_user_id" in client.session
    response = client.post(reverse("logout"))
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="logout", actor="alice").exists()


def test_signed_in_user_visiting_login_goes_home(verified_client, make_vendor_user):
    client = verified_client(make_vendor_user("alice"))
    assert client.get(reverse("login"))["Location"] == reverse("home")


def test_an_empty_form_asks_for_what_is_missing(client, db):
    response = client.post(reverse("login"), {})
    assert b"Enter your username." in response.content
    assert b"Enter your password." in response.content
    assert not AuditEvent.objects.exists()


def test_an_empty_code_asks_for_the_code(client, make_vendor_user):
    make_vendor_user("alice")
    password_step(client, "alice")
    response = otp_step(client, "")
    assert b"Enter the code from your authenticator app." in response.content
    assert "otp_device_id" not in client.session
