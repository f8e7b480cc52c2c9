"""What the portal shows about the SSH gateway, and pinning a device's key."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from broker.models import AuditEvent, Device
from sessions.doors.ssh.gateway import host_key_fingerprint, host_key_path, load_host_key
from tests.support.sshd import device_sshd  # noqa: F401  (fixture)


def test_gateway_host_key_is_generated_once_and_private(settings, tmp_path):
    settings.GATEWAY_HOST_KEY_FILE = tmp_path / "gw_key"
    first = load_host_key().get_fingerprint("sha256")
    assert oct(host_key_path().stat().st_mode & 0o777) == "0o600"
    assert load_host_key().get_fingerprint("sha256") == first


def test_grant_page_shows_the_exact_ssh_command_and_the_gateway_fingerprint(
    db, settings, make_vendor_user, make_device, make_grant, verified_client
):
    settings.GATEWAY_PUBLIC_HOST = "airlock.plant.example"
    settings.GATEWAY_PUBLIC_PORT = 2222
    user = make_vendor_user("alice")
    grant = make_grant(
        user, make_device("plc-7"), allow_upload=True, allow_download=False, forward_ports=[502]
    )
    page = verified_client(user).get(reverse("grant-detail", args=[grant.code])).content.decode()
    assert "ssh -p 2222 alice+plc-7@airlock.plant.example" in page
    assert "scp -P 2222 FILE alice+plc-7@airlock.plant.example:PATH" in page
    assert "alice+plc-7@airlock.plant.example:PATH ." not in page  # no download on this grant
    assert "sftp -P 2222 alice+plc-7@airlock.plant.example" in page
    assert "127.0.0.1:LOCALPORT:plc-7:DEVICEPORT" in page
    assert host_key_fingerprint() in page


@pytest.mark.sshd
def test_pinhostkey_shows_the_key_and_pins_only_with_yes(db, make_device, device_sshd):
    from asyncssh import import_public_key

    device = make_device("plc-pin", ssh_host="127.0.0.1", ssh_port=device_sshd.port)
    expected = import_public_key(device_sshd.host_key_line).get_fingerprint("sha256")
    out = StringIO()
    call_command("pinhostkey", "plc-pin", stdout=out)
    assert expected in out.getvalue()
    assert "--yes" in out.getvalue()
    assert Device.objects.get(pk=device.pk).ssh_host_key == ""
    call_command("pinhostkey", "plc-pin", "--yes", stdout=StringIO())
    pinned = Device.objects.get(pk=device.pk).ssh_host_key
    assert import_public_key(pinned).get_fingerprint("sha256") == expected
    assert AuditEvent.objects.filter(
        action="device.host_key_pinned", target="device plc-pin"
    ).exists()


def test_pinhostkey_of_an_unreachable_device_is_a_clear_error(db, make_device):
    from tests.conftest import free_port

    make_device("plc-gone", ssh_host="127.0.0.1", ssh_port=free_port())
    with pytest.raises(CommandError, match="cannot reach"):
        call_command("pinhostkey", "plc-gone", stdout=StringIO())


def test_ssh_keys_page_shows_the_gateway_fingerprint(db, make_vendor_user, verified_client):
    user = make_vendor_user("carol")
    page = verified_client(user).get(reverse("sshkey-list")).content.decode()
    assert host_key_fingerprint() in page
