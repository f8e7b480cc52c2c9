"""Live control with real parts in one process: the real OpenSSH client as
the vendor, the gateway, Debian's sshd as the device. A revocation, a lock,
an approver's terminate or a signed sensor signal ends the vendor's session
at once: the client exits with the reason on stderr and the device-side TCP
connection is closed."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from broker import approvals
from broker.models import ApprovalRule
from sessions.models import Session
from tests.support.netstate import established_to
from tests.support.signing import create_sensor, post_signal
from tests.support.sshd import (
    device_sshd,
    ended_sessions,
    gateway,
    make_ssh_vendor,
    vendor,
    wait_for,
)  # noqa: F401

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def in_memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def start_long_session(vendor: Any, device_sshd: Any) -> subprocess.Popen:
    before = established_to(device_sshd.port)
    proc = subprocess.Popen(
        vendor.ssh_args("sleep 600"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: (
            Session.objects.filter(user=vendor.user, ended_at=None).exists()
            and established_to(device_sshd.port) > before
        )
    )
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=30)  # a hang guard only
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err.decode(errors="replace")


def test_an_approvers_revocation_ends_the_ssh_session_with_the_reason(
    vendor: Any, device_sshd: Any, make_approver: Any
) -> None:
    proc = start_long_session(vendor, device_sshd)
    olga = make_approver("olga")

    approvals.revoke_grant(olga, vendor.grant, reason="the work order was cancelled")

    code, err = finish(proc)
    assert code != 0
    assert "the work order was cancelled" in err and "olga" in err
    wait_for(lambda: established_to(device_sshd.port) == 0)
    # Both sides close first; the row is written right after.
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    assert session.end_reason == "the work order was cancelled"


def test_a_lock_on_the_device_ends_the_session_and_refuses_the_next(
    vendor: Any, device_sshd: Any, make_approver: Any, make_group: Any
) -> None:
    proc = start_long_session(vendor, device_sshd)
    # Locks follow zones: Olga approves this device's zone.
    ops = make_group("Plant operations")
    ApprovalRule.objects.create(zone=vendor.device.zone, group=ops, count=1)
    olga = make_approver("olga", groups=[ops])
    approvals.create_lock(olga, device=vendor.device, reason="safety stop")

    code, err = finish(proc)
    assert "safety stop" in err
    again = vendor.ssh("echo hi")
    assert again.returncode != 0 and b"safety stop" in again.stderr
    assert b"hi" not in again.stdout


def test_a_signed_zeek_notice_for_the_device_ends_the_session(
    vendor: Any, device_sshd: Any, client: Any
) -> None:
    _, secret = create_sensor("zeek-ot-1")
    proc = start_long_session(vendor, device_sshd)
    notice = {
        "ts": 1795405231.5,
        "uid": "CHhAvVGS1DHFjwGM9",
        "id.orig_h": "10.20.0.15",
        "id.orig_p": 51234,
        "id.resp_h": "127.0.0.1",
        "id.resp_p": device_sshd.port,
        "proto": "tcp",
        "note": "Modbus::Unauthorized_Write",
        "msg": "Modbus write from a host outside the engineering VLAN",
        "src": "10.20.0.15",
        "dst": "127.0.0.1",
        "p": device_sshd.port,
        "peer_descr": "zeek-ot-1",
        "actions": ["Notice::ACTION_LOG"],
        "email_dest": [],
        "suppress_for": 3600.0,
    }

    response = post_signal(client, "zeek-ot-1", secret, json.dumps(notice))

    assert response.status_code == 202, response.content
    code, err = finish(proc)
    assert code != 0 and "Modbus::Unauthorized_Write" in err
    wait_for(lambda: established_to(device_sshd.port) == 0)


def test_a_denied_command_typed_through_ssh_ends_the_session(vendor: Any, device_sshd: Any) -> None:
    result = vendor.ssh("iptables -F; sleep 600", timeout=60)
    assert result.returncode != 0
    assert b"security signal (command_rule)" in result.stderr
