"""scp and sftp through the gateway: SFTP terminated at the gateway, relayed
to the device, every file logged with path, direction, size and SHA-256, and
each direction refused unless the grant allows it."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from broker.models import AuditEvent
from sessions.models import FileTransfer
from tests.support.sshd import DEVICE_USER, device_sshd, gateway, make_ssh_vendor, wait_for  # noqa: F401

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def _device_file(name: str, data: bytes) -> str:
    path = f"/home/{DEVICE_USER}/{name}"
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o644)
    return path


def _transfers(session_user) -> list[FileTransfer]:
    return list(FileTransfer.objects.filter(session__user=session_user))


def test_scp_upload_is_relayed_and_logged_when_the_grant_allows_it(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor(grant={"allow_upload": True})
    data = os.urandom(300_000)
    local = tmp_path / "firmware.bin"
    local.write_bytes(data)
    name = f"up-{uuid.uuid4().hex}.bin"
    result = v.scp(str(local), v.remote(name))
    assert result.returncode == 0, result.stderr
    assert open(f"/home/{DEVICE_USER}/{name}", "rb").read() == data
    transfer = wait_for(lambda: _transfers(v.user))[0]
    assert transfer.direction == "upload" and transfer.allowed
    assert transfer.path.endswith(name)
    assert transfer.size == len(data)
    assert transfer.sha256 == hashlib.sha256(data).hexdigest()


def test_scp_upload_is_refused_with_a_clear_message_without_upload_permission(
    make_ssh_vendor, tmp_path
):
    v = make_ssh_vendor(grant={"allow_upload": False, "allow_download": True})
    local = tmp_path / "payload.sh"
    local.write_bytes(b"echo pwned\n")
    name = f"refused-{uuid.uuid4().hex}.sh"
    result = v.scp(str(local), v.remote(name))
    assert result.returncode != 0
    assert b"does not allow uploads" in result.stderr
    assert not os.path.exists(f"/home/{DEVICE_USER}/{name}")
    refused = wait_for(lambda: _transfers(v.user))[0]
    assert refused.allowed is False and refused.direction == "upload"
    assert AuditEvent.objects.filter(action="session.file_refused").exists()


def test_legacy_scp_protocol_upload_is_refused_per_direction_too(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor(grant={"allow_upload": False, "allow_download": True})
    local = tmp_path / "legacy.txt"
    local.write_bytes(b"legacy\n")
    name = f"legacy-{uuid.uuid4().hex}.txt"
    result = v.scp(str(local), v.remote(name), legacy=True)
    assert result.returncode != 0
    assert not os.path.exists(f"/home/{DEVICE_USER}/{name}")


def test_legacy_scp_protocol_download_works_and_is_logged(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor(grant={"allow_download": True})
    data = os.urandom(50_000)
    path = _device_file(f"legacy-dl-{uuid.uuid4().hex}.bin", data)
    result = v.scp(v.remote(path), str(tmp_path / "got.bin"), legacy=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "got.bin").read_bytes() == data
    transfer = wait_for(lambda: _transfers(v.user))[0]
    assert transfer.sha256 == hashlib.sha256(data).hexdigest()


def test_sftp_download_is_logged_with_the_right_sha256(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor(grant={"allow_download": True})
    data = os.urandom(1_000_000)
    path = _device_file(f"log-{uuid.uuid4().hex}.tar", data)
    result = v.sftp(f"get {path} {tmp_path / 'copy.tar'}\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copy.tar").read_bytes() == data
    transfer = wait_for(lambda: _transfers(v.user))[0]
    assert transfer.direction == "download" and transfer.path == path
    assert transfer.size == len(data)
    assert transfer.sha256 == hashlib.sha256(data).hexdigest()


def test_sftp_download_is_refused_without_download_permission(make_ssh_vendor, tmp_path):
    # Uploads granted so the vendor may look around (metadata needs some
    # file transfer); reading contents still needs a download grant.
    v = make_ssh_vendor(grant={"allow_upload": True, "allow_download": False})
    path = _device_file(f"secret-{uuid.uuid4().hex}.cfg", b"recipe\n")
    result = v.sftp(f"get {path} {tmp_path / 'x'}\n")
    assert result.returncode != 0
    assert b"does not allow downloads" in result.stderr
    assert not (tmp_path / "x").exists()


def test_sftp_listing_shows_the_devices_files_not_the_gateways(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_download": True})
    marker = f"only-on-device-{uuid.uuid4().hex}"
    _device_file(marker, b"x")
    result = v.sftp(f"ls /home/{DEVICE_USER}\nls /etc/passwd\n")
    assert marker.encode() in result.stdout


def test_sftp_paths_with_dot_dot_stay_on_the_device(make_ssh_vendor, tmp_path):
    v = make_ssh_vendor(grant={"allow_download": True})
    # Whatever the path, it is resolved by the device's sshd, never on the gateway.
    result = v.sftp(f"get ../../../../{tmp_path.relative_to('/')}/nothing {tmp_path / 'y'}\n")
    assert result.returncode != 0
    assert not (tmp_path / "y").exists()
