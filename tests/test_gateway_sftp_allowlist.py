"""SFTP through the gateway is an allow-list: every request is read, write or
metadata, allowed only when the grant allows that class, and a handle is used
only in the direction it was opened for (issue 12 point 1)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest
from asyncssh.sftp import FXF_READ, FXF_WRITE

from sessions.models import FileTransfer
from tests.support.sshd import DEVICE_USER, device_sshd, gateway, make_ssh_vendor, wait_for  # noqa: F401

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]

HOME = f"/home/{DEVICE_USER}"


def _device_file(data: bytes) -> str:
    path = f"{HOME}/allow-{uuid.uuid4().hex}.bin"
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o666)
    return path


def _with_sftp(vendor: Any, body: Callable[[asyncssh.SFTPClient], Awaitable[Any]]) -> Any:
    """Run body against an asyncssh SFTP client connected through the gateway."""
    from sessions.doors.ssh.gateway import host_key_line

    async def run() -> Any:
        key = asyncssh.read_private_key(str(vendor.key))
        trusted = asyncssh.import_public_key(host_key_line())
        async with asyncssh.connect(
            "127.0.0.1",
            vendor.gateway_port,
            username=vendor.login,
            client_keys=[key],
            known_hosts=([trusted], [], []),
            config=None,
            agent_path=None,
        ) as conn:
            async with conn.start_sftp_client() as sftp:
                return await body(sftp)

    return asyncio.run(run())


async def _refused(call: Awaitable[Any]) -> bool:
    try:
        await call
    except asyncssh.SFTPPermissionDenied:
        return True
    return False


def test_an_open_with_no_flags_then_read_is_refused_on_a_grant_without_downloads(
    make_ssh_vendor,
):
    v = make_ssh_vendor(grant={"allow_upload": True, "allow_download": False})
    path = _device_file(b"secret recipe\n")

    async def body(sftp: asyncssh.SFTPClient) -> bool:
        return await _refused(sftp.open(path, 0, encoding=None))

    assert _with_sftp(v, body)
    refused = wait_for(lambda: list(FileTransfer.objects.filter(session__user=v.user)))[0]
    assert refused.allowed is False and refused.direction == "download"


def test_reading_a_handle_opened_only_for_writing_is_refused(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_upload": True, "allow_download": False})
    path = _device_file(b"do not read me\n")

    async def body(sftp: asyncssh.SFTPClient) -> bool:
        fh = await sftp.open(path, FXF_WRITE, encoding=None)
        try:
            return await _refused(fh.read(100, 0))
        finally:
            await fh.close()

    assert _with_sftp(v, body)


def test_writing_a_handle_opened_only_for_reading_is_refused(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_upload": False, "allow_download": True})
    path = _device_file(b"original\n")

    async def body(sftp: asyncssh.SFTPClient) -> bool:
        fh = await sftp.open(path, FXF_READ, encoding=None)
        try:
            return await _refused(fh.write(b"changed!", 0))
        finally:
            await fh.close()

    assert _with_sftp(v, body)
    assert open(path, "rb").read() == b"original\n"


def test_every_metadata_request_is_refused_when_no_file_transfer_is_granted(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_upload": False, "allow_download": False})
    path = _device_file(b"x")

    async def body(sftp: asyncssh.SFTPClient) -> dict[str, bool]:
        return {
            "stat": await _refused(sftp.stat(path)),
            "lstat": await _refused(sftp.lstat(path)),
            "opendir": await _refused(sftp.listdir(HOME)),
            "readlink": await _refused(sftp.readlink(path)),
            "realpath": await _refused(sftp.realpath(HOME)),
            "statvfs": await _refused(sftp.statvfs(HOME)),
        }

    assert _with_sftp(v, body) == dict.fromkeys(
        ["stat", "lstat", "opendir", "readlink", "realpath", "statvfs"], True
    )


def test_every_change_request_is_refused_without_upload_permission(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_upload": False, "allow_download": True})
    path = _device_file(b"keep me\n")
    new = f"{HOME}/new-{uuid.uuid4().hex}"

    async def body(sftp: asyncssh.SFTPClient) -> dict[str, bool]:
        return {
            "mkdir": await _refused(sftp.mkdir(new)),
            "rmdir": await _refused(sftp.rmdir(HOME)),
            "remove": await _refused(sftp.remove(path)),
            "rename": await _refused(sftp.rename(path, new)),
            "posix_rename": await _refused(sftp.posix_rename(path, new)),
            "setstat": await _refused(sftp.chmod(path, 0o600)),
            "symlink": await _refused(sftp.symlink(path, new)),
            "link": await _refused(sftp.link(path, new)),
            "open for write": await _refused(sftp.open(path, FXF_WRITE, encoding=None)),
        }

    result = _with_sftp(v, body)
    assert all(result.values()), result
    assert open(path, "rb").read() == b"keep me\n"
    assert not os.path.exists(new)


def test_an_unknown_extended_request_is_refused(make_ssh_vendor):
    v = make_ssh_vendor(grant={"allow_upload": True, "allow_download": True})

    async def body(sftp: asyncssh.SFTPClient) -> bool:
        try:
            await sftp._handler._make_request(b"airlock-probe@example.com", b"")
        except asyncssh.SFTPOpUnsupported:
            return True
        return False

    assert _with_sftp(v, body)
