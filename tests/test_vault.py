"""The credential vault: AES-GCM at rest, key ids, rotation, no leaks."""

from __future__ import annotations

import base64
import logging
import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from broker import approvals, vault
from broker.models import AuditEvent, Credential
from tests.support.access_fixtures import plant  # noqa: F401
from tests.support.sshd import device_sshd, gateway  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.both, pytest.mark.django_db]

SECRET = "Sup3r-Secret-PLC-password!"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def credential(make_device):
    device = make_device("plc-vault")
    cred = Credential(device=device, protocol="ssh", username="maint")
    cred.set_secret(SECRET)
    cred.save()
    return cred


def raw_secret_column(pk: int) -> bytes:
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT ciphertext, key_id FROM {Credential._meta.db_table} WHERE id = %s", [pk]
        )
        blob, key_id = cur.fetchone()
    return bytes(blob), key_id


def test_the_raw_database_column_does_not_contain_the_plaintext(credential):
    blob, key_id = raw_secret_column(credential.pk)
    assert SECRET.encode() not in blob
    assert SECRET.encode("utf-16-le") not in blob
    assert key_id == vault.current_key_id()
    assert vault.open_secret(Credential.objects.get(pk=credential.pk)) == SECRET


def test_sealing_twice_gives_different_ciphertexts():
    assert vault.seal(SECRET)[1] != vault.seal(SECRET)[1]


def test_a_tampered_ciphertext_is_refused_without_showing_the_secret(credential):
    blob = bytearray(credential.ciphertext)
    blob[-1] ^= 1
    credential.ciphertext = bytes(blob)
    with pytest.raises(vault.VaultError) as exc:
        vault.open_secret(credential)
    assert SECRET not in str(exc.value)


def test_a_relabelled_key_id_is_refused(credential, settings):
    other = new_key()
    settings.VAULT_OLD_KEYS = [other]
    credential.key_id = vault.key_id(base64.b64decode(other))
    with pytest.raises(vault.VaultError):
        vault.open_secret(credential)


def test_repr_and_str_of_a_credential_never_show_the_secret(credential):
    assert SECRET not in repr(credential)
    assert SECRET not in str(credential)


def test_rotation_reencrypts_under_the_new_key_while_the_old_one_still_decrypts(
    credential, settings
):
    old_key, old_id = settings.VAULT_KEY, credential.key_id
    settings.VAULT_KEY = new_key()
    settings.VAULT_OLD_KEYS = [old_key]
    # Before rotation the old key still opens it.
    assert vault.open_secret(Credential.objects.get(pk=credential.pk)) == SECRET

    call_command("rotatevaultkey")

    rotated = Credential.objects.get(pk=credential.pk)
    assert rotated.key_id == vault.current_key_id() != old_id
    assert SECRET.encode() not in raw_secret_column(rotated.pk)[0]
    # The old key is no longer needed.
    settings.VAULT_OLD_KEYS = []
    assert vault.open_secret(rotated) == SECRET
    assert AuditEvent.objects.filter(action="vault.rotated").exists()


def test_without_the_old_key_an_unrotated_secret_cannot_be_opened(credential, settings):
    settings.VAULT_KEY = new_key()
    settings.VAULT_OLD_KEYS = []
    with pytest.raises(vault.VaultError, match="not in the keyring"):
        vault.open_secret(Credential.objects.get(pk=credential.pk))


def test_rotate_with_generate_writes_a_new_key_and_keeps_the_old_one(
    credential, settings, tmp_path, monkeypatch
):
    monkeypatch.delenv("AIRLOCK_VAULT_KEY", raising=False)
    monkeypatch.delenv("AIRLOCK_VAULT_KEY_FILE", raising=False)
    settings.VAR_DIR = tmp_path
    old_key = settings.VAULT_KEY
    call_command("rotatevaultkey", "--generate")
    assert (tmp_path / "vault_key").read_text().strip() == settings.VAULT_KEY != old_key
    assert old_key in (tmp_path / "vault_old_keys").read_text()
    assert oct((tmp_path / "vault_key").stat().st_mode & 0o777) == "0o600"
    assert vault.open_secret(Credential.objects.get(pk=credential.pk)) == SECRET
    assert Credential.objects.get(pk=credential.pk).key_id == vault.current_key_id()


def test_a_malformed_vault_key_is_a_clear_error(settings):
    settings.VAULT_KEY = "not-base64!!"
    with pytest.raises(vault.VaultError, match="base64"):
        vault.seal("x")


def test_a_whole_request_to_approval_flow_logs_no_secret(
    credential,
    caplog,
    make_vendor_user,
    make_group,
    make_approver,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    caplog.set_level(logging.DEBUG)
    device = credential.device
    ops = make_group("Plant operations")
    from broker.models import ApprovalRule

    ApprovalRule.objects.create(zone=device.zone, group=ops, count=1)
    vendor_user = make_vendor_user("vera")
    vendor_user.vendor.eligible_devices.add(device)
    approver = make_approver("olga", groups=[ops])
    with django_capture_on_commit_callbacks(execute=True):
        req = approvals.submit_request(
            vendor_user,
            device,
            protocols=["ssh"],
            starts_at=None,
            duration=timedelta(hours=1),
            reason="WO-1",
        )
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(approver, req, approve=True)
    from broker.access import authorize

    grant = authorize(
        vendor_user, device, protocol="ssh", at=timezone.now(), source_ip="10.0.0.1"
    ).grant
    # The gateway opens the secret here; that path must not log it either.
    assert vault.open_secret(Credential.objects.get(device=grant.device, protocol="ssh")) == SECRET
    assert caplog.records, "the flow should have logged something at DEBUG"
    assert SECRET not in caplog.text
    for event in AuditEvent.objects.all():
        assert SECRET not in str(event.data)
    from django.core import mail

    assert mail.outbox and all(SECRET not in m.body for m in mail.outbox)


@pytest.mark.sshd
@pytest.mark.django_db(transaction=True)
def test_a_whole_request_to_connect_flow_through_the_gateway_logs_no_secret(
    plant, device_sshd, gateway, caplog, tmp_path, settings, django_capture_on_commit_callbacks
):
    """Request, two approvals, and a real OpenSSH connection through the
    gateway to a real sshd that takes the vaulted password — with every
    logger (asyncssh included) at DEBUG — and the password appears nowhere."""
    import subprocess

    from broker import sshkeys
    from sessions.doors.ssh.gateway import host_key_line
    from tests.support.sshd import DEVICE_PASSWORD, keygen, pin_device

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    pin_device(plant.device, device_sshd)
    key, pub = keygen(tmp_path / "vera_ed25519")
    sshkeys.register(plant.vera, pub)
    with django_capture_on_commit_callbacks(execute=True):
        req = approvals.submit_request(
            plant.vera,
            plant.device,
            protocols=["ssh"],
            starts_at=None,
            duration=timedelta(hours=1),
            reason="WO-77",
        )
    for approver in (plant.olga, plant.sam):
        with django_capture_on_commit_callbacks(execute=True):
            approvals.decide(approver, req, approve=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{gateway.port} {host_key_line()}\n")
    result = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(gateway.port),
            f"vera+{plant.device.slug}@127.0.0.1",
            "echo connected",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.stdout == b"connected\n", result.stderr.decode()
    assert any(r.name.startswith("asyncssh") for r in caplog.records), (
        "asyncssh DEBUG was not captured"
    )
    assert DEVICE_PASSWORD not in caplog.text
    assert DEVICE_PASSWORD.encode() not in result.stderr
    for event in AuditEvent.objects.all():
        assert DEVICE_PASSWORD not in str(event.data)
