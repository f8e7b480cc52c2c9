"""The access pages, through Django's test client: vendors ask, approvers
decide (with step-up), auditors read, admins keep the vault write-only."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncssh
import pytest
from django.urls import reverse
from django.utils import timezone

from broker import approvals, vault
from broker.models import AccessRequest, AuditEvent, Credential, Grant, Lock, SSHPublicKey
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both
BERLIN = ZoneInfo("Europe/Berlin")


def without_step_up(client):
    session = client.session
    session.pop("airlock_otp_at", None)
    session.save()
    return client


def pending_request(plant, **kw):
    args = dict(protocols=["ssh"], starts_at=None, duration=timedelta(hours=2), reason="WO-4711")
    args.update(kw)
    return approvals.submit_request(plant.vera, plant.device, **args)


# --- vendor -------------------------------------------------------------------------


def test_the_vendor_sees_eligible_devices_with_a_request_link(plant, verified_client, make_device):
    make_device("plc-hidden", zone=plant.zone)
    page = verified_client(plant.vera).get(reverse("device-list")).content.decode()
    assert "plc-7" in page and "plc-hidden" not in page
    assert reverse("request-new", args=[plant.device.code]) in page


def test_the_request_form_uses_native_datetime_pickers_in_plant_time(plant, verified_client):
    page = (
        verified_client(plant.vera)
        .get(reverse("request-new", args=[plant.device.code]))
        .content.decode()
    )
    assert 'type="datetime-local"' in page and "Europe/Berlin" in page
    assert "<script" not in page.split("</head>")[1]


def test_a_vendor_requests_a_window_typed_in_plant_time(plant, verified_client):
    start_local = (
        (timezone.now() + timedelta(days=1)).astimezone(BERLIN).replace(second=0, microsecond=0)
    )
    response = verified_client(plant.vera).post(
        reverse("request-new", args=[plant.device.code]),
        {
            "protocols": ["ssh"],
            "start": "at",
            "starts_at": start_local.strftime("%Y-%m-%dT%H:%M"),
            "hours": "1.5",
            "reason": "WO-4711 firmware update",
            "wants_download": "on",
        },
    )
    req = AccessRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "request-detail", args=[req.code]
    )
    assert req.starts_at == start_local and req.duration == timedelta(minutes=90)
    assert req.wants_download and not req.wants_upload


@pytest.mark.parametrize(
    "data,error",
    [
        ({"start": "at", "starts_at": "2020-01-01T10:00"}, "in the past"),
        ({"hours": "12"}, "8 hours at most"),
        ({"reason": ""}, "This field is required"),
        ({"start": "at", "starts_at": "tomorrow"}, "Enter a date and time"),
        ({"protocols": ["rdp"]}, "not one of the available choices"),
    ],
)
def test_bad_request_input_shows_a_clear_error_and_saves_nothing(
    plant, verified_client, data, error
):
    form = {"protocols": ["ssh"], "start": "approval", "hours": "2", "reason": "WO-1", **data}
    response = verified_client(plant.vera).post(
        reverse("request-new", args=[plant.device.code]), form
    )
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not AccessRequest.objects.exists()


def test_the_vendor_cancels_a_pending_request(plant, verified_client):
    req = pending_request(plant)
    client = verified_client(plant.vera)
    assert (
        "Cancel request" in client.get(reverse("request-detail", args=[req.code])).content.decode()
    )
    client.post(reverse("request-cancel", args=[req.code]))
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.CANCELLED


def test_my_grants_show_how_to_connect_and_work_done_ends_it(plant, verified_client, make_grant):
    grant = make_grant(plant.vera, plant.device)
    client = verified_client(plant.vera)
    page = client.get(reverse("grant-detail", args=[grant.code])).content.decode()
    assert 'id="how-to-connect"' in page and "plc-7" in page and "Work done" in page
    assert "Register an SSH public key first" in page
    client.post(reverse("grant-end", args=[grant.code]))
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoked_by == plant.vera


def test_the_grant_page_tells_the_truth_when_a_lock_holds(plant, verified_client, make_grant):
    grant = make_grant(plant.vera, plant.device)
    Lock.objects.create(device=plant.device, reason="line restart")
    page = (
        verified_client(plant.vera).get(reverse("grant-detail", args=[grant.code])).content.decode()
    )
    assert "would refuse a connection" in page and "line restart" in page


def test_times_are_shown_in_the_zones_time_zone(plant, verified_client, make_grant):
    grant = make_grant(
        plant.vera,
        plant.device,
        starts_at=datetime(2030, 7, 1, 8, 0, tzinfo=ZoneInfo("UTC")),
        ends_at=datetime(2030, 7, 1, 10, 0, tzinfo=ZoneInfo("UTC")),
    )
    page = (
        verified_client(plant.vera).get(reverse("grant-detail", args=[grant.code])).content.decode()
    )
    assert "01 Jul 2030 10:00 – 12:00 CEST" in page


# --- SSH keys -----------------------------------------------------------------------


def test_registering_a_key_needs_step_up_and_shows_the_fingerprint(plant, verified_client):
    client = without_step_up(verified_client(plant.vera))
    response = client.get(reverse("sshkey-new"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login-step-up"))
    line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    response = client.post(reverse("sshkey-new"), {"public_key": line, "name": "laptop"})
    assert response.status_code == 302 and not SSHPublicKey.objects.exists()

    client = verified_client(plant.vera)
    client.post(reverse("sshkey-new"), {"public_key": line, "name": "laptop"})
    key = SSHPublicKey.objects.get()
    page = client.get(reverse("sshkey-list")).content.decode()
    assert key.fingerprint in page and "never" in page
    client.post(reverse("sshkey-delete", args=[key.code]))
    assert not SSHPublicKey.objects.exists()


def test_a_weak_key_is_refused_on_the_page(plant, verified_client):
    line = asyncssh.generate_private_key("ssh-rsa", key_size=1024).export_public_key().decode()
    response = verified_client(plant.vera).post(reverse("sshkey-new"), {"public_key": line})
    assert response.status_code == 400 and "at least 2048" in response.content.decode()
    assert not SSHPublicKey.objects.exists()


# --- approver -----------------------------------------------------------------------


def test_the_queue_shows_quorum_progress(plant, verified_client):
    req = pending_request(plant)
    approvals.decide(plant.olga, req, approve=True)
    page = verified_client(plant.sam).get(reverse("approval-queue")).content.decode()
    assert "1 of 2: OT security pending" in page and "vera" in page
    page = verified_client(plant.olga).get(reverse("approval-queue")).content.decode()
    assert "you decided" in page


def test_deciding_needs_step_up(plant, verified_client):
    req = pending_request(plant)
    client = without_step_up(verified_client(plant.olga))
    response = client.post(reverse("request-decide", args=[req.code]), {"decision": "approve"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login-step-up"))
    assert not req.approvals.exists()


def test_two_approvers_approve_through_the_pages_and_the_vendor_sees_the_grant(
    plant, verified_client
):
    req = pending_request(plant, wants_upload=True)
    verified_client(plant.olga).post(
        reverse("request-decide", args=[req.code]), {"decision": "approve"}
    )
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.PENDING
    client = verified_client(plant.sam)
    page = client.get(reverse("request-decide", args=[req.code])).content.decode()
    assert 'type="datetime-local"' in page and "Allow upload" in page
    response = client.post(
        reverse("request-decide", args=[req.code]), {"decision": "approve", "note": "ok"}
    )
    assert response.status_code == 302
    grant = Grant.objects.get(request=req)
    assert not grant.allow_upload  # the checkbox was left unticked: upload off
    page = verified_client(plant.vera).get(reverse("grant-list")).content.decode()
    assert reverse("grant-detail", args=[grant.code]) in page and "active" in page


def test_denying_needs_a_note(plant, verified_client):
    req = pending_request(plant)
    response = verified_client(plant.olga).post(
        reverse("request-decide", args=[req.code]), {"decision": "deny"}
    )
    assert response.status_code == 400 and "Say why you deny it" in response.content.decode()
    req.refresh_from_db()
    assert req.status == AccessRequest.Status.PENDING


def test_deciding_twice_on_the_page_is_a_clear_refusal(plant, verified_client):
    req = pending_request(plant)
    client = verified_client(plant.olga)
    client.post(reverse("request-decide", args=[req.code]), {"decision": "approve"})
    response = client.post(reverse("request-decide", args=[req.code]), {"decision": "approve"})
    assert response.status_code == 409 and "already decided" in response.content.decode()


def test_an_approver_shortens_the_window_in_plant_time(plant, verified_client):
    start = (
        (timezone.now() + timedelta(hours=2)).astimezone(BERLIN).replace(second=0, microsecond=0)
    )
    req = pending_request(plant, starts_at=start, duration=timedelta(hours=4))
    end_local = start + timedelta(hours=1)
    for who in (plant.olga, plant.sam):
        verified_client(who).post(
            reverse("request-decide", args=[req.code]),
            {"decision": "approve", "ends_at": end_local.strftime("%Y-%m-%dT%H:%M")},
        )
    assert Grant.objects.get().ends_at == end_local


def test_an_approver_revokes_a_grant_with_step_up(plant, verified_client, make_grant):
    grant = make_grant(plant.vera, plant.device)
    client = without_step_up(verified_client(plant.olga))
    assert (
        client.post(reverse("grant-revoke", args=[grant.code]), {"reason": "x"}).status_code == 302
    )
    grant.refresh_from_db()
    assert grant.revoked_at is None
    client = verified_client(plant.olga)
    client.post(reverse("grant-revoke", args=[grant.code]), {"reason": "odd traffic"})
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoke_reason == "odd traffic"


def test_an_approver_creates_and_lifts_a_lock_with_a_ttl(plant, verified_client, make_grant):
    make_grant(plant.vera, plant.device)
    client = verified_client(plant.olga)
    response = client.post(
        reverse("lock-new"), {"user": plant.vera.pk, "reason": "cool off", "ttl": "60"}
    )
    assert response.status_code == 302
    lock = Lock.objects.get()
    assert lock.user == plant.vera and lock.expires_at is not None
    assert "cool off" in client.get(reverse("lock-list")).content.decode()
    client.post(reverse("lock-lift", args=[lock.code]))
    lock.refresh_from_db()
    assert lock.lifted_by == plant.olga


def test_a_lock_naming_two_targets_is_refused_on_the_page(plant, verified_client):
    response = verified_client(plant.olga).post(
        reverse("lock-new"), {"user": plant.vera.pk, "device": plant.device.pk, "reason": "x"}
    )
    assert response.status_code == 400 and "exactly one" in response.content.decode()
    assert not Lock.objects.exists()


# --- auditor ------------------------------------------------------------------------


def test_the_auditor_filters_requests_and_grants(plant, verified_client, make_user, make_grant):
    pending_request(plant)
    cancelled = pending_request(plant, reason="second")
    approvals.cancel_request(plant.vera, cancelled)
    make_grant(plant.vera, plant.device)
    client = verified_client(make_user("ada", is_auditor=True))
    page = client.get(reverse("request-list"), {"status": "cancelled"}).content.decode()
    assert page.count(reverse("request-detail", args=[cancelled.code])) == 1
    assert len(re.findall(r"/access/requests/[0-9a-f-]{36}/", page)) == 1
    page = client.get(reverse("grant-list"), {"status": "revoked"}).content.decode()
    assert "No grants match" in page
    page = client.get(
        reverse("grant-list"), {"status": "active", "device": "plc-7"}
    ).content.decode()
    assert "plc-7" in page
    assert (
        "Approve or deny"
        not in client.get(reverse("request-detail", args=[cancelled.code])).content.decode()
    )


# --- admin: the vault is write-only ---------------------------------------------------


@pytest.fixture
def admin_client(verified_client, make_user):
    return verified_client(make_user("root", is_staff=True, is_superuser=True))


def test_the_admin_never_renders_a_vaulted_secret(plant, admin_client):
    secret = "Pl4nt-Secret-123!"
    response = admin_client.post(
        reverse("admin:broker_credential_add"),
        {
            "device": plant.device.pk,
            "protocol": "ssh",
            "username": "maint",
            "kind": "password",
            "new_secret": secret,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    cred = Credential.objects.get()
    assert vault.open_secret(cred) == secret
    for url in (
        reverse("admin:broker_credential_change", args=[cred.pk]),
        reverse("admin:broker_credential_changelist"),
    ):
        page = admin_client.get(url).content.decode()
        assert secret not in page and "set (vault key" in page
    events = AuditEvent.objects.filter(action__startswith="credential.")
    assert events.exists() and all(secret not in str(e.data) for e in events)


def test_replacing_a_secret_keeps_the_old_one_when_left_empty(plant, admin_client):
    cred = Credential(device=plant.device, protocol="ssh", username="maint")
    cred.set_secret("first")
    cred.save()
    url = reverse("admin:broker_credential_change", args=[cred.pk])
    base = {"device": plant.device.pk, "protocol": "ssh", "username": "maint2", "kind": "password"}
    admin_client.post(url, {**base, "new_secret": ""})
    assert vault.open_secret(Credential.objects.get()) == "first"
    admin_client.post(url, {**base, "new_secret": "second"})
    assert vault.open_secret(Credential.objects.get()) == "second"


def test_the_credential_admin_needs_step_up(plant, admin_client):
    response = without_step_up(admin_client).get(reverse("admin:broker_credential_add"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login-step-up"))


def test_a_malformed_host_key_pin_is_refused(plant, admin_client):
    url = reverse("admin:broker_device_change", args=[plant.device.pk])
    response = admin_client.post(
        url,
        {
            "slug": "plc-7",
            "name": "PLC",
            "kind": "plc",
            "zone": plant.zone.pk,
            "is_active": "on",
            "ssh_host": "127.0.0.1",
            "ssh_port": "22",
            "ssh_host_key": "ssh-ed25519 garbage",
            "rdp_host": "",
            "rdp_port": "3389",
        },
    )
    assert (
        response.status_code == 200
        and "host key as one OpenSSH public key" in response.content.decode()
    )
    plant.device.refresh_from_db()
    assert plant.device.ssh_host_key == ""


def test_the_zone_admin_shows_and_audits_the_policy(plant, admin_client):
    page = admin_client.get(reverse("admin:broker_zone_changelist")).content.decode()
    assert "1 of OT security AND 1 of Plant operations" in page


def test_approvers_see_active_grants_first(plant, verified_client, make_grant):
    live = make_grant(plant.vera, plant.device)
    ended = make_grant(
        plant.vera,
        plant.device,
        starts_at=timezone.now() - timedelta(days=2),
        ends_at=timezone.now() - timedelta(days=1),
    )
    client = verified_client(plant.olga)
    page = client.get(reverse("grant-list")).content.decode()
    assert reverse("grant-detail", args=[live.code]) in page
    assert reverse("grant-detail", args=[ended.code]) not in page
    page = client.get(reverse("grant-list"), {"status": "ended"}).content.decode()
    assert reverse("grant-detail", args=[ended.code]) in page


def test_a_form_error_does_not_echo_the_secret(plant, admin_client):
    secret = "Echo-Me-Not-42!"
    response = admin_client.post(
        reverse("admin:broker_credential_add"),
        {
            "device": plant.device.pk,
            "protocol": "ssh",
            "username": "",
            "kind": "password",
            "new_secret": secret,
        },
    )
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert secret not in response.content.decode()
    assert not Credential.objects.exists()


def test_the_auditor_filters_by_vendor_and_dates(
    plant, verified_client, make_user, make_vendor_user
):
    import time_machine

    with time_machine.travel(datetime(2030, 3, 1, 9, 0, tzinfo=ZoneInfo("UTC"))):
        old = pending_request(plant)
    with time_machine.travel(datetime(2030, 3, 5, 9, 0, tzinfo=ZoneInfo("UTC"))):
        new = pending_request(plant)
    client = verified_client(make_user("ada", is_auditor=True))
    page = client.get(reverse("request-list"), {"since": "2030-03-02"}).content.decode()
    assert str(new.code) in page and str(old.code) not in page
    page = client.get(reverse("request-list"), {"until": "2030-03-01"}).content.decode()
    assert str(old.code) in page and str(new.code) not in page
    page = client.get(reverse("request-list"), {"vendor": "no such vendor"}).content.decode()
    assert "No requests match" in page
    page = client.get(reverse("request-list"), {"since": "not a date"}).content.decode()
    assert "Enter a valid date" in page


def test_the_lists_offer_cancel_and_work_done_on_ones_own_items(
    plant, verified_client, make_grant, make_vendor_user
):
    req = pending_request(plant)
    grant = make_grant(plant.vera, plant.device)
    client = verified_client(plant.vera)
    assert (
        reverse("request-cancel", args=[req.code])
        in client.get(reverse("request-list")).content.decode()
    )
    assert (
        reverse("grant-end", args=[grant.code])
        in client.get(reverse("grant-list")).content.decode()
    )
    colleague = verified_client(make_vendor_user("victor", vendor=plant.vendor))
    assert (
        reverse("request-cancel", args=[req.code])
        not in colleague.get(reverse("request-list")).content.decode()
    )
    assert (
        reverse("grant-end", args=[grant.code])
        not in colleague.get(reverse("grant-list")).content.decode()
    )


def test_the_auditor_filters_locks_by_state_and_target(
    plant, verified_client, make_user, make_grant
):
    make_grant(plant.vera, plant.device)
    on_user = approvals.create_lock(plant.olga, user=plant.vera, reason="user lock")
    on_device = approvals.create_lock(plant.olga, device=plant.device, reason="device lock")
    approvals.lift_lock(plant.olga, on_device)
    client = verified_client(make_user("ada", is_auditor=True))
    page = client.get(reverse("lock-list")).content.decode()
    assert "user lock" in page and "device lock" not in page and "New lock" not in page
    page = client.get(reverse("lock-list"), {"show": "all", "kind": "device"}).content.decode()
    assert "device lock" in page and "user lock" not in page and "lifted" in page
    assert on_user.is_active(timezone.now())
