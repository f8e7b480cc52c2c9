"""Enrolment: authenticator first (QR drawn locally + secret), then backup
codes shown once; profile actions that touch the second factor need step-up."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse
from django_otp.oath import totp

from broker.models import AuditEvent, StaticDevice, StaticToken, TOTPDevice
from tests.conftest import TEST_PASSWORD, totp_now
from tests.support.accounts import code_from_secret

pytestmark = pytest.mark.django_db


def half_signed_in(client, user):
    """Past the password step only."""
    response = client.post(reverse("login"), {"username": user.username, "password": TEST_PASSWORD})
    assert response.status_code == 302
    return client


def test_enrolment_page_shows_an_inline_svg_qr_and_the_secret(client, make_vendor_user):
    user = make_vendor_user("alice", totp=False)
    half_signed_in(client, user)
    page = client.get(reverse("enrol"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "<?xml" not in html
    assert "<script" not in html.split("</head>")[1]
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    secret = page.context["secret"]
    assert f'data-secret="{secret}"' in html
    assert code_from_secret(secret) == totp_now(device)
    # Reloading keeps the same secret (the app may already have scanned it).
    assert client.get(reverse("enrol")).context["secret"] == secret
    assert TOTPDevice.objects.filter(user=user).count() == 1


def test_a_right_code_confirms_enrolment_signs_in_and_shows_ten_backup_codes_once(
    client, make_vendor_user
):
    user = make_vendor_user("alice", totp=False)
    half_signed_in(client, user)
    secret = client.get(reverse("enrol")).context["secret"]
    response = client.post(reverse("enrol"), {"code": code_from_secret(secret)})
    assert response["Location"] == reverse("enrol-backup-codes")
    assert TOTPDevice.objects.get(user=user).confirmed
    assert AuditEvent.objects.filter(action="enrolment", actor="alice").exists()

    page = client.get(reverse("enrol-backup-codes"))
    codes = page.context["codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert code in page.content.decode()
    assert "no-store" in page["Cache-Control"]
    stored = list(StaticToken.objects.filter(device__user=user))
    assert len(stored) == 10
    # Stored hashed: each shown code matches exactly one stored row, and
    # no row holds a code in the clear.
    assert all(sum(t.matches(code) for t in stored) == 1 for code in codes)
    assert not any(code in t.token_hash for t in stored for code in codes)

    again = client.get(reverse("enrol-backup-codes"))
    assert again.context["codes"] is None
    for code in codes:
        assert code not in again.content.decode()
    assert client.get(reverse("home")).status_code == 200


def test_a_wrong_code_does_not_confirm_enrolment(client, make_vendor_user):
    user = make_vendor_user("alice", totp=False)
    half_signed_in(client, user)
    secret = client.get(reverse("enrol")).context["secret"]
    wrong = str((int(code_from_secret(secret)) + 1) % 1_000_000).zfill(6)
    response = client.post(reverse("enrol"), {"code": wrong})
    assert response.status_code == 200
    assert b"That code does not match" in response.content
    assert not TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    assert client.get(reverse("home"))["Location"] == reverse("enrol")


def test_enrolment_cannot_add_a_second_authenticator_to_a_half_signed_in_session(
    client, make_vendor_user
):
    user = make_vendor_user("alice")  # already enrolled
    half_signed_in(client, user)
    response = client.get(reverse("enrol"))
    assert response["Location"] == reverse("login-otp")
    response = client.post(reverse("enrol"), {"code": "123456"})
    assert response["Location"] == reverse("login-otp")
    assert TOTPDevice.objects.filter(user=user).count() == 1


def test_enrolment_needs_the_password_step_first(client, db):
    response = client.get(reverse("enrol"))
    assert response["Location"].startswith(reverse("login"))


def test_backup_codes_page_needs_a_verified_session(client, make_vendor_user):
    user = make_vendor_user("alice")
    half_signed_in(client, user)
    response = client.get(reverse("enrol-backup-codes"))
    assert response["Location"].startswith(reverse("login-otp"))
    assert not StaticDevice.objects.filter(user=user).exists()


def test_resetting_the_authenticator_needs_a_fresh_code(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    session = client.session
    session["airlock_otp_at"] = time.time() - 600
    session.save()
    response = client.post(reverse("profile-totp-reset"))
    assert response["Location"].startswith(reverse("login-step-up"))
    assert TOTPDevice.objects.filter(user=user, confirmed=True).exists()

    device = TOTPDevice.objects.get(user=user)
    response = client.post(
        reverse("login-step-up"), {"code": totp_now(device), "next": reverse("profile-totp-reset")}
    )
    assert response["Location"] == reverse("profile-totp-reset")
    assert AuditEvent.objects.filter(action="otp.step_up").exists()
    response = client.post(reverse("profile-totp-reset"))
    assert response["Location"] == reverse("enrol")
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert AuditEvent.objects.filter(action="totp.reset", actor="alice").exists()
    # The session lost its verified device: only enrolment is open now.
    assert client.get(reverse("home"))["Location"] == reverse("enrol")
    page = client.get(reverse("enrol"))
    assert page.status_code == 200


def test_a_wrong_step_up_code_does_not_allow_the_action(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    session = client.session
    session["airlock_otp_at"] = time.time() - 600
    session.save()
    device = TOTPDevice.objects.get(user=user)
    wrong = str((int(totp_now(device)) + 1) % 1_000_000).zfill(6)
    response = client.post(reverse("login-step-up"), {"code": wrong, "next": "/profile/"})
    assert response.status_code == 200
    assert b"That code is not right" in response.content
    assert client.post(reverse("profile-totp-reset"))["Location"].startswith(
        reverse("login-step-up")
    )
    assert TOTPDevice.objects.filter(user=user).exists()
    assert AuditEvent.objects.get(action="otp.failed").data == {"step": "step-up"}


def test_regenerating_backup_codes_replaces_the_old_ones(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    static = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    StaticToken.objects.create(device=static, token="oldcode1")
    client = verified_client(user)
    response = client.post(reverse("profile-backup-codes"))
    assert response["Location"] == reverse("enrol-backup-codes")
    codes = client.get(reverse("enrol-backup-codes")).context["codes"]
    assert len(codes) == 10
    tokens = list(StaticToken.objects.filter(device__user=user))
    assert len(tokens) == 10
    assert all(any(t.matches(code) for t in tokens) for code in codes)
    assert not any(t.matches("oldcode1") for t in tokens)


def test_regenerating_backup_codes_needs_a_fresh_code(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    session = client.session
    session["airlock_otp_at"] = time.time() - 600
    session.save()
    response = client.post(reverse("profile-backup-codes"))
    assert response["Location"].startswith(reverse("login-step-up"))
    assert not StaticToken.objects.filter(device__user=user).exists()


def test_changing_the_password_checks_the_old_one_and_is_audited(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    client = verified_client(user)
    response = client.post(
        reverse("profile"),
        {
            "old_password": "wrong",
            "new_password1": "river-sluice-gate-88",
            "new_password2": "river-sluice-gate-88",
        },
    )
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)
    response = client.post(
        reverse("profile"),
        {
            "old_password": TEST_PASSWORD,
            "new_password1": "river-sluice-gate-88",
            "new_password2": "river-sluice-gate-88",
        },
    )
    assert response["Location"] == reverse("profile")
    user.refresh_from_db()
    assert user.check_password("river-sluice-gate-88")
    assert AuditEvent.objects.filter(action="password.changed", actor="alice").exists()
    # The session survives its own password change.
    assert client.get(reverse("profile")).status_code == 200


def test_the_profile_never_shows_the_totp_secret(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    page = verified_client(user).get(reverse("profile"))
    assert page.status_code == 200
    assert device.key not in page.content.decode()
