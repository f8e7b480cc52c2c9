"""Invitations: the only way in. One-time links, 72 hours, hashed tokens."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from broker import invitations
from broker.models import AuditEvent, Invitation, User

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "turbine-valve-harbour-42"


@pytest.fixture
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


def test_inviting_stores_only_the_hash_and_emails_a_one_time_link(make_vendor, admin_user):
    vendor = make_vendor("Acme Automation")
    invitation, token = invitations.invite(
        email="alice@acme.example", username="alice", vendor=vendor, invited_by=admin_user
    )
    assert token not in invitation.token_hash
    assert invitation.token_hash == invitations.hash_token(token)
    assert invitation.expires_at - invitation.created_at == timedelta(hours=72)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@acme.example"]
    assert f"/invitation/{token}/" in message.body
    assert "vendor user for Acme Automation" in message.body
    assert "72 hours" in message.body
    event = AuditEvent.objects.get(action="invitation.sent")
    assert event.actor == "root"
    assert token not in str(event.data)


def test_an_invited_vendor_sets_a_password_and_must_enrol_next(client, make_vendor, admin_user):
    vendor = make_vendor("Acme Automation")
    invitation, token = invitations.invite(
        email="alice@acme.example", username="alice", vendor=vendor, invited_by=admin_user
    )
    url = reverse("invitation", args=[token])
    page = client.get(url)
    assert page.status_code == 200
    assert b"alice" in page.content and b"Acme Automation" in page.content
    response = client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD})
    assert response["Location"] == reverse("enrol")
    user = User.objects.get(username="alice")
    assert user.vendor == vendor and user.check_password(GOOD_PASSWORD)
    assert user.email == "alice@acme.example"
    invitation.refresh_from_db()
    assert invitation.used_at is not None and invitation.user == user
    assert AuditEvent.objects.filter(action="invitation.used", actor="alice").exists()
    # Nothing but enrolment until an authenticator is set up.
    assert client.get(reverse("home"))["Location"] == reverse("enrol")
    assert client.get(reverse("profile"))["Location"] == reverse("enrol")


def test_an_invited_approver_joins_the_chosen_groups(client, make_group, admin_user):
    ops, sec = make_group("Plant operations"), make_group("OT security")
    _, token = invitations.invite(
        email="bob@plant.example", username="bob", approver_groups=[ops, sec], invited_by=admin_user
    )
    client.post(
        reverse("invitation", args=[token]),
        {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
    )
    bob = User.objects.get(username="bob")
    assert set(bob.approver_groups.all()) == {ops, sec}
    assert bob.roles == ["approver"]


def test_an_invited_admin_becomes_staff(client, admin_user):
    _, token = invitations.invite(
        email="carol@plant.example", username="carol", is_staff=True, invited_by=admin_user
    )
    client.post(
        reverse("invitation", args=[token]),
        {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD},
    )
    assert User.objects.get(username="carol").is_admin


def test_a_weak_password_is_refused_with_reasons_and_the_link_stays_usable(client, admin_user):
    invitation, token = invitations.invite(
        email="dave@plant.example", username="dave", is_auditor=True, invited_by=admin_user
    )
    url = reverse("invitation", args=[token])
    response = client.post(url, {"password1": "short1", "password2": "short1"})
    assert response.status_code == 200
    assert b"at least 12 characters" in response.content
    response = client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD + "x"})
    assert b"The two passwords differ" in response.content
    response = client.post(
        url, {"password1": "dave@plant.example1", "password2": "dave@plant.example1"}
    )
    assert b"too similar" in response.content
    assert not User.objects.filter(username="dave").exists()
    invitation.refresh_from_db()
    assert invitation.used_at is None


def test_a_used_invitation_is_refused_with_a_sentence_and_audited(client, admin_user):
    _, token = invitations.invite(
        email="erin@plant.example", username="erin", is_auditor=True, invited_by=admin_user
    )
    url = reverse("invitation", args=[token])
    client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD})
    client.post(reverse("logout"))
    password_before = User.objects.get(username="erin").password

    response = client.post(
        url, {"password1": "another-password-77", "password2": "another-password-77"}
    )
    assert response.status_code == 410
    assert b"already used" in response.content
    assert User.objects.get(username="erin").password == password_before
    assert User.objects.filter(username="erin").count() == 1
    event = AuditEvent.objects.get(action="invitation.refused")
    assert event.data == {"reason": "used"}


def test_an_expired_invitation_is_refused_with_a_sentence_and_audited(client, admin_user):
    invitation, token = invitations.invite(
        email="fay@plant.example", username="fay", is_auditor=True, invited_by=admin_user
    )
    url = reverse("invitation", args=[token])
    with time_machine.travel(timezone.now() + timedelta(hours=72, minutes=1)):
        page = client.get(url)
        assert page.status_code == 410
        assert b"has expired" in page.content
        response = client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD})
        assert response.status_code == 410
    assert not User.objects.filter(username="fay").exists()
    invitation.refresh_from_db()
    assert invitation.used_at is None
    assert (
        AuditEvent.objects.filter(action="invitation.refused", data__reason="expired").count() == 2
    )


def test_an_invitation_is_still_good_just_before_72_hours(client, admin_user):
    _, token = invitations.invite(
        email="gus@plant.example", username="gus", is_auditor=True, invited_by=admin_user
    )
    with time_machine.travel(timezone.now() + timedelta(hours=71, minutes=59)):
        assert client.get(reverse("invitation", args=[token])).status_code == 200


def test_an_unknown_token_is_refused_and_audited(client, db):
    response = client.get(reverse("invitation", args=["not-a-real-token"]))
    assert response.status_code == 410
    assert b"not valid" in response.content
    assert AuditEvent.objects.filter(action="invitation.refused", data__reason="unknown").exists()


def test_accept_is_compare_and_set_so_a_link_makes_one_account(admin_user):
    invitation, _ = invitations.invite(
        email="hal@plant.example", username="hal", is_auditor=True, invited_by=admin_user
    )
    stale = Invitation.objects.get(pk=invitation.pk)
    invitations.accept(invitation, GOOD_PASSWORD)
    with pytest.raises(invitations.InvitationError) as refused:
        invitations.accept(stale, "a-different-password-9")
    assert refused.value.reason == "used"
    assert User.objects.filter(username="hal").count() == 1


def test_a_vendor_user_cannot_be_invited_with_another_role(make_vendor, admin_user):
    with pytest.raises(ValueError):
        invitations.invite(
            email="x@acme.example",
            username="x",
            vendor=make_vendor(),
            is_auditor=True,
            invited_by=admin_user,
        )
    assert not Invitation.objects.exists()


def test_admins_invite_from_the_invite_page(verified_client, admin_user, make_vendor):
    vendor = make_vendor("Acme Automation")
    client = verified_client(admin_user)
    assert client.get(reverse("invite")).status_code == 200
    response = client.post(
        reverse("invite"),
        {
            "email": "ivy@acme.example",
            "username": "ivy",
            "role": "vendor",
            "vendor": vendor.pk,
        },
    )
    assert response.status_code == 302
    invitation = Invitation.objects.get(username="ivy")
    assert invitation.vendor == vendor and invitation.invited_by == admin_user
    token = re.search(r"/invitation/([^/]+)/", mail.outbox[0].body).group(1)
    assert invitation.token_hash == invitations.hash_token(token)


def test_the_invite_page_explains_missing_role_details(verified_client, admin_user):
    client = verified_client(admin_user)
    response = client.post(
        reverse("invite"), {"email": "j@x.example", "username": "j1", "role": "vendor"}
    )
    assert b"Choose the vendor company" in response.content
    response = client.post(
        reverse("invite"), {"email": "j@x.example", "username": "j1", "role": "approver"}
    )
    assert b"Choose at least one approver group" in response.content
    response = client.post(
        reverse("invite"), {"email": "j@x.example", "username": "root", "role": "auditor"}
    )
    assert b"already has this username" in response.content
    assert not Invitation.objects.exists()


def test_people_who_are_not_admins_cannot_invite(verified_client, make_vendor_user):
    client = verified_client(make_vendor_user("mallory"))
    response = client.post(
        reverse("invite"), {"email": "m@x.example", "username": "m2", "role": "admin"}
    )
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_cancelling_an_invitation_in_the_admin_makes_its_link_refuse(
    verified_client, admin_user, client
):
    invitation, token = invitations.invite(
        email="kim@plant.example", username="kim", is_auditor=True, invited_by=admin_user
    )
    staff = verified_client(admin_user)
    response = staff.post(
        reverse("admin:broker_invitation_changelist"),
        {
            "action": "cancel_invitations",
            "_selected_action": [invitation.pk],
        },
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="invitation.cancelled").exists()
    staff.post(reverse("logout"))
    assert staff.get(reverse("invitation", args=[token])).status_code == 410


def test_accepting_an_invitation_in_a_signed_in_browser_replaces_that_session(
    verified_client, make_vendor_user, admin_user
):
    client = verified_client(make_vendor_user("alice"))
    _, token = invitations.invite(
        email="lee@plant.example", username="lee", is_auditor=True, invited_by=admin_user
    )
    url = reverse("invitation", args=[token])
    assert client.get(url).status_code == 200
    assert client.get(reverse("home")).status_code == 200  # a visit signs no one out
    client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD})
    lee = User.objects.get(username="lee")
    assert client.session["_auth_user_id"] == str(lee.pk)
    assert "otp_device_id" not in client.session
    assert client.get(reverse("home"))["Location"] == reverse("enrol")


def test_an_invitation_for_a_vendor_whose_contract_ended_is_refused(
    client, make_vendor, admin_user
):
    vendor = make_vendor("Acme Automation")
    _, token = invitations.invite(
        email="max@acme.example", username="max", vendor=vendor, invited_by=admin_user
    )
    vendor.contract_ends_at = timezone.now() - timedelta(minutes=1)
    vendor.save()
    url = reverse("invitation", args=[token])
    response = client.post(url, {"password1": GOOD_PASSWORD, "password2": GOOD_PASSWORD})
    assert response.status_code == 410
    assert b"The contract of Acme Automation with the plant has ended" in response.content
    assert not User.objects.filter(username="max").exists()
    assert AuditEvent.objects.filter(
        action="invitation.refused", data__reason="contract_ended"
    ).exists()
