"""Throttling with django-axes: 5 failures per username and per client
address, wrong OTP codes count like wrong passwords, forged
X-Forwarded-For does not help, and every lockout is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from broker.models import AuditEvent, TOTPDevice
from tests.conftest import TEST_PASSWORD, totp_now

pytestmark = pytest.mark.django_db

WRONG = "definitely-not-it"


def try_password(client, username, password=WRONG, **headers):
    return client.post(reverse("login"), {"username": username, "password": password}, **headers)


def wrong_code(device):
    return str((int(totp_now(device)) + 500_000) % 1_000_000).zfill(6)


def sign_in(client, user):
    device = TOTPDevice.objects.get(user=user)
    try_password(client, user.username, TEST_PASSWORD)
    return client.post(reverse("login-otp"), {"code": totp_now(device)})


def test_five_wrong_passwords_lock_the_username_even_for_the_right_password(
    client, make_vendor_user
):
    make_vendor_user("alice")
    for _ in range(4):
        assert try_password(client, "alice").status_code == 200
    response = try_password(client, "alice")
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.content
    response = try_password(client, "alice", TEST_PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.filter(action="login.locked_out").first()
    assert event is not None and event.actor == "alice" and event.source_ip == "127.0.0.1"


def test_four_wrong_passwords_do_not_lock(client, make_vendor_user):
    user = make_vendor_user("alice")
    for _ in range(4):
        try_password(client, "alice")
    assert sign_in(client, user)["Location"] == reverse("home")
    assert not AuditEvent.objects.filter(action="login.locked_out").exists()


def test_five_failures_from_one_address_lock_the_address_for_every_username(
    client, make_vendor_user
):
    make_vendor_user("victim")
    for i in range(5):
        try_password(client, f"guess{i}")
    response = try_password(client, "victim", TEST_PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_locked_username_is_locked_from_other_addresses_too(make_vendor_user):
    make_vendor_user("alice")
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(5):
        try_password(attacker, "alice")
    owner = Client(REMOTE_ADDR="192.0.2.10")
    assert try_password(owner, "alice", TEST_PASSWORD).status_code == 429


def test_wrong_otp_codes_count_and_lock_out_after_five(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    try_password(client, "alice", TEST_PASSWORD)
    for _ in range(4):
        response = client.post(reverse("login-otp"), {"code": wrong_code(device)})
        assert response.status_code == 200
    response = client.post(reverse("login-otp"), {"code": wrong_code(device)})
    assert response.status_code == 429
    # The half-signed-in session is ended.
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="otp.failed").count() == 5
    assert AuditEvent.objects.filter(action="login.locked_out", actor="alice").exists()
    # The right password and even the right code do not get in now.
    assert try_password(client, "alice", TEST_PASSWORD).status_code == 429


def test_signing_in_again_with_the_password_does_not_reset_the_otp_count(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    for _ in range(2):
        try_password(client, "alice", TEST_PASSWORD)
        client.post(reverse("login-otp"), {"code": wrong_code(device)})
        client.post(reverse("login-otp"), {"code": wrong_code(device)})
        client.post(reverse("logout"))
    try_password(client, "alice", TEST_PASSWORD)
    response = client.post(reverse("login-otp"), {"code": wrong_code(device)})
    assert response.status_code == 429


def test_password_and_otp_failures_add_up(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    for _ in range(3):
        try_password(client, "alice")
    try_password(client, "alice", TEST_PASSWORD)
    client.post(reverse("login-otp"), {"code": wrong_code(device)})
    response = client.post(reverse("login-otp"), {"code": wrong_code(device)})
    assert response.status_code == 429


def test_wrong_step_up_codes_count_too(verified_client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    client = verified_client(user)
    for _ in range(4):
        client.post(reverse("login-step-up"), {"code": wrong_code(device)})
    response = client.post(reverse("login-step-up"), {"code": wrong_code(device)})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_forged_x_forwarded_for_does_not_reset_the_count(client, make_vendor_user):
    make_vendor_user("victim")
    for i in range(5):
        try_password(client, f"guess{i}", HTTP_X_FORWARDED_FOR=f"203.0.113.{i + 1}")
    response = try_password(client, "victim", TEST_PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    assert set(
        AuditEvent.objects.filter(action="login.failed").values_list("source_ip", flat=True)
    ) == {"127.0.0.1"}


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(client, make_vendor_user, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    user = make_vendor_user("bob")
    for i in range(5):
        try_password(client, f"guess{i}", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert try_password(client, "nobody", HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}
    # Another client behind the same proxy is not locked out.
    try_password(client, "bob", TEST_PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.20")
    device = TOTPDevice.objects.get(user=user)
    response = client.post(
        reverse("login-otp"), {"code": totp_now(device)}, HTTP_X_FORWARDED_FOR="198.51.100.20"
    )
    assert response["Location"] == reverse("home")


def test_the_lockout_ends_after_the_cool_off(client, make_vendor_user, settings):
    user = make_vendor_user("alice")
    for _ in range(5):
        try_password(client, "alice")
    assert try_password(client, "alice", TEST_PASSWORD).status_code == 429
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(minutes=1)):
        assert sign_in(client, user)["Location"] == reverse("home")


def test_a_full_sign_in_clears_the_users_failure_count(client, make_vendor_user):
    user = make_vendor_user("alice")
    for _ in range(4):
        try_password(client, "alice")
    sign_in(client, user)
    assert not AccessAttempt.objects.filter(username="alice").exists()


def test_failure_records_keep_neither_passwords_nor_codes(client, make_vendor_user):
    user = make_vendor_user("alice")
    device = TOTPDevice.objects.get(user=user)
    try_password(client, "alice", "my-secret-guess-123")
    try_password(client, "alice", TEST_PASSWORD)
    code = wrong_code(device)
    client.post(reverse("login-otp"), {"code": code})
    stored = " ".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert "my-secret-guess-123" not in stored
    assert code not in stored
