"""Who gets through the gateway: keys, authorize() denials, the zone's TOTP,
the device's pinned host key. Every denial reaches the vendor's stderr as a
sentence, is audited, and never reaches the device (its sshd log shows no
login)."""

from __future__ import annotations

from datetime import timedelta

import pexpect
import pytest
from django.utils import timezone

from broker.models import AuditEvent, Grant, Lock, TOTPDevice
from sessions.models import Session
from tests.conftest import totp_now
from tests.support.sshd import (  # noqa: F401  (fixtures)
    device_sshd,
    ended_sessions,
    gateway,
    keygen,
    make_ssh_vendor,
    vendor,
    wait_for,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def _assert_denied(vendor, device_sshd, words: str) -> None:
    logins_before = len(device_sshd.logins())
    result = vendor.ssh("echo hi")
    assert result.returncode == 255
    assert b"hi\n" not in result.stdout
    stderr = result.stderr.decode()
    assert "access denied" in stderr and words in stderr, stderr
    assert len(device_sshd.logins()) == logins_before
    assert not Session.objects.filter(user=vendor.user).exists()
    assert AuditEvent.objects.filter(action="gateway.denied", actor=vendor.user.username).exists()


def test_vendor_without_a_grant_is_denied_with_the_reason(make_ssh_vendor, device_sshd):
    v = make_ssh_vendor()
    Grant.objects.filter(pk=v.grant.pk).delete()
    _assert_denied(v, device_sshd, f"you have no approved access to {v.device.slug}")


def test_vendor_with_a_future_window_is_told_when_it_starts(make_ssh_vendor, device_sshd):
    now = timezone.now()
    v = make_ssh_vendor(
        grant={"starts_at": now + timedelta(hours=2), "ends_at": now + timedelta(hours=3)}
    )
    _assert_denied(v, device_sshd, "your next window starts")


def test_vendor_with_an_expired_grant_is_told_when_it_ended(make_ssh_vendor, device_sshd):
    now = timezone.now()
    v = make_ssh_vendor(
        grant={"starts_at": now - timedelta(hours=3), "ends_at": now - timedelta(hours=1)}
    )
    _assert_denied(v, device_sshd, "ended at")


def test_vendor_with_a_revoked_grant_is_denied(make_ssh_vendor, device_sshd):
    v = make_ssh_vendor()
    Grant.objects.filter(pk=v.grant.pk).update(revoked_at=timezone.now(), revoke_reason="work done")
    _assert_denied(v, device_sshd, "was revoked: work done")


def test_locked_vendor_user_is_denied_with_the_lock_reason(make_ssh_vendor, device_sshd):
    v = make_ssh_vendor()
    Lock.objects.create(user=v.user, reason="suspicious commands")
    _assert_denied(v, device_sshd, "suspicious commands")


def test_vendor_whose_contract_is_over_is_denied(make_ssh_vendor, device_sshd):
    v = make_ssh_vendor()
    vendor_org = v.user.vendor
    vendor_org.contract_ends_at = timezone.now() - timedelta(days=1)
    vendor_org.save()
    _assert_denied(v, device_sshd, "has ended")


def test_a_key_that_is_not_registered_is_refused_without_reaching_the_device(
    vendor, device_sshd, tmp_path
):
    other, _ = keygen(tmp_path / "stranger")
    vendor.key = other
    logins_before = len(device_sshd.logins())
    result = vendor.ssh("echo hi")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    assert len(device_sshd.logins()) == logins_before


def test_a_login_without_a_device_part_is_told_the_format(vendor):
    import subprocess

    args = vendor.ssh_args("echo hi")
    args[-2] = f"{vendor.user.username}@127.0.0.1"
    result = subprocess.run(args, capture_output=True, timeout=60)
    assert result.returncode == 255
    assert b"+<device>" in result.stderr


def test_an_unknown_device_is_refused_like_a_wrong_key(vendor, device_sshd):
    import subprocess

    args = vendor.ssh_args("echo hi")
    args[-2] = f"{vendor.user.username}+no-such-device@127.0.0.1"
    result = subprocess.run(args, capture_output=True, timeout=60)
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_a_device_presenting_another_host_key_is_refused_and_audited(vendor, device_sshd, tmp_path):
    _, other_pub = keygen(tmp_path / "impostor")
    vendor.device.ssh_host_key = other_pub
    vendor.device.save()
    logins_before = len(device_sshd.logins())
    result = vendor.ssh("echo hi")
    assert result.returncode == 255
    assert b"does not match the pinned one" in result.stderr
    assert len(device_sshd.logins()) == logins_before
    event = AuditEvent.objects.get(action="gateway.denied", actor=vendor.user.username)
    assert event.data["reason"] == "host_key_mismatch"


def test_zone_requiring_totp_refuses_a_client_that_skips_it(
    make_ssh_vendor, make_zone, device_sshd
):
    v = make_ssh_vendor(zone=make_zone(requires_connection_otp=True))
    logins_before = len(device_sshd.logins())
    result = v.ssh("echo hi")  # BatchMode: OpenSSH never answers keyboard-interactive
    assert result.returncode == 255
    assert b"hi\n" not in result.stdout
    assert b"keyboard-interactive" in result.stderr
    assert len(device_sshd.logins()) == logins_before
    assert not Session.objects.filter(user=v.user).exists()


def _interactive_ssh(v, command: str) -> pexpect.spawn:
    args = v.ssh_args(command, batch=False)
    return pexpect.spawn(args[0], args[1:], timeout=30)


def test_zone_requiring_totp_lets_the_vendor_in_after_a_valid_code(make_ssh_vendor, make_zone):
    v = make_ssh_vendor(zone=make_zone(requires_connection_otp=True))
    child = _interactive_ssh(v, "echo totp-ok")
    child.expect("One-time code")
    child.sendline(totp_now(TOTPDevice.objects.get(user=v.user)))
    child.expect("totp-ok")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert wait_for(lambda: ended_sessions(v.user))


def test_zone_requiring_totp_refuses_wrong_codes(make_ssh_vendor, make_zone, device_sshd):
    v = make_ssh_vendor(zone=make_zone(requires_connection_otp=True))
    logins_before = len(device_sshd.logins())
    child = _interactive_ssh(v, "echo never")
    for _ in range(3):
        child.expect("One-time code")
        child.sendline("000000")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 255
    assert b"never" not in (child.before or b"")
    assert len(device_sshd.logins()) == logins_before
    assert AuditEvent.objects.filter(action="gateway.denied", data__reason="otp_failed").exists()


def test_a_second_user_name_on_one_connection_is_refused(make_vendor_user, make_device):
    """What one login proved (its key) must never count for another."""
    import asyncio

    from sessions.doors.ssh.gateway import Gateway, GatewayServer

    make_vendor_user("alice")
    make_vendor_user("bob")
    make_device("plc-a")
    server = GatewayServer(Gateway.__new__(Gateway))

    async def switch() -> None:
        await server.begin_auth("alice+plc-a")
        server.key_ok = True  # as if alice's key had been proven (partial success)
        await server.begin_auth("bob+plc-a")

    asyncio.run(switch())
    assert server.denied and not server.key_ok
    assert not server.public_key_auth_supported() and not server.kbdint_auth_supported()
