"""SFTP (and scp) terminated at the gateway.

The vendor's SFTP session ends here: `DeviceSFTP` is an asyncssh SFTPServer
that serves nothing of the gateway host. Every request is answered by an
SFTP client to the device over the session's device connection, so paths
are the device's paths (what its sshd exposes to Airlock's account) and no
path can name a file on the gateway. Legacy scp (`scp -O`, exec `scp -t`
and `scp -f`) is served by asyncssh's scp server on top of this same class,
so the same checks and logs apply.

Per file the gateway logs path, direction, size and SHA-256 (FileTransfer
rows and the audit chain). The grant decides per direction: writes and
changes need `allow_upload`, reading file contents needs `allow_download`,
and metadata (listing, stat, readlink, realpath, statvfs) needs either. This is
an allow-list: every request the SFTP server answers is classified as read,
write or metadata here, anything not classified (unknown extended requests,
SFTPv5+ opens, locks) is refused by asyncssh or by the stubs below, and a
handle is only read from or written to in the direction it was opened for
(an open with no flags at all is a read). A refusal is an SFTP "permission
denied" plus a sentence on the vendor's stderr.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import asyncssh
from asyncssh import SFTPAttrs, SFTPName
from asyncssh.sftp import FXF_APPEND, FXF_CREAT, FXF_READ, FXF_TRUNC, FXF_WRITE

from sessions.live.core import LiveSession
from sessions.models import FileTransfer

log = logging.getLogger("airlock.sessions.doors.ssh.sftp")

WRITE_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC


class _Transfer:
    """An open file: where it is, which way it goes, and its running hash
    while the vendor reads or writes it in order."""

    def __init__(
        self,
        path: bytes,
        remote: asyncssh.SFTPClientFile,
        direction: str,
        readable: bool,
        writable: bool,
    ) -> None:
        self.path = path
        self.remote = remote
        self.direction = direction
        # What the open was allowed for: read() and write() check these, so
        # a handle opened for writing cannot be used to read (or vice versa).
        self.readable = readable
        self.writable = writable
        self.hash = hashlib.sha256()
        self.next_offset = 0
        self.in_order = True
        self.size = 0

    def saw(self, offset: int, data: bytes) -> None:
        if offset == self.next_offset and self.in_order:
            self.hash.update(data)
            self.next_offset += len(data)
        elif offset + len(data) <= self.next_offset and self.in_order:
            pass  # a re-read of bytes already hashed
        else:
            self.in_order = False
        self.size = max(self.size, offset + len(data))


def _text(path: bytes) -> str:
    return path.decode("utf-8", "replace")


class DeviceSFTP(asyncssh.SFTPServer):
    """SFTP server for the vendor whose every answer comes from the device."""

    def __init__(self, chan: asyncssh.SSHServerChannel, live: LiveSession) -> None:
        super().__init__(chan)
        self.live = live
        self._client: asyncssh.SFTPClient | None = None

    async def _device(self) -> asyncssh.SFTPClient:
        if self._client is None:
            if self.live.device_conn is None or self.live.ended:
                raise asyncssh.SFTPConnectionLost("the device connection is closed")
            try:
                self._client = await self.live.device_conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                raise asyncssh.SFTPFailure(f"the device refused SFTP: {exc}")
        return self._client

    def _refuse(self, path: bytes, direction: str, why: str) -> None:
        self.live.file(_text(path), direction, 0, "", allowed=False)
        message = f"airlock: {why}\n"
        try:
            self.channel.write_stderr(message.encode())
        except Exception:
            pass
        raise asyncssh.SFTPPermissionDenied(why)

    def _need_upload(self, path: bytes, what: str) -> None:
        if not self.live.allow_upload:
            self._refuse(
                path,
                FileTransfer.Direction.UPLOAD,
                f"{what} {_text(path)} refused: your grant does not allow "
                f"uploads or changes on {self.live.device_slug}",
            )

    def _need_download(self, path: bytes, what: str) -> None:
        if not self.live.allow_download:
            self._refuse(
                path,
                FileTransfer.Direction.DOWNLOAD,
                f"{what} {_text(path)} refused: your grant does not allow "
                f"downloads from {self.live.device_slug}",
            )

    def _need_metadata(self, path: bytes) -> None:
        """Listing and stat reveal what is on the device: allowed only when
        the grant allows some file transfer at all."""
        if not (self.live.allow_upload or self.live.allow_download):
            self._refuse(
                path,
                FileTransfer.Direction.DOWNLOAD,
                f"looking at {_text(path)} refused: your grant does not allow "
                f"file transfer on {self.live.device_slug}",
            )

    # Paths are the device's: nothing maps them onto the gateway's disk.
    def map_path(self, path: bytes) -> bytes:
        return path

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    def format_user(self, uid: int | None) -> str:
        return str(uid) if uid is not None else ""

    def format_group(self, gid: int | None) -> str:
        return str(gid) if gid is not None else ""

    # -- files ----------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> _Transfer:  # type: ignore[override]
        writing = bool(pflags & WRITE_FLAGS)
        # No flags at all still opens the file read-only on the device, so
        # anything that is not purely a write counts as a read.
        reading = bool(pflags & FXF_READ) or not writing
        if writing:
            self._need_upload(path, "upload of")
        if reading:
            self._need_download(path, "download of")
        client = await self._device()
        remote = await client.open(path, pflags, attrs, encoding=None)
        direction = FileTransfer.Direction.UPLOAD if writing else FileTransfer.Direction.DOWNLOAD
        return _Transfer(path, remote, direction, readable=reading, writable=writing)

    def open56(self, *args: object) -> object:
        raise asyncssh.SFTPOpUnsupported("SFTPv5+ open is not supported")

    async def read(self, file_obj: _Transfer, offset: int, size: int) -> bytes:  # type: ignore[override]
        if not file_obj.readable:
            self._refuse(
                file_obj.path,
                FileTransfer.Direction.DOWNLOAD,
                "reading a handle opened for writing refused",
            )
        data = await file_obj.remote.read(size, offset)
        file_obj.saw(offset, data)
        return data

    async def write(self, file_obj: _Transfer, offset: int, data: bytes) -> int:  # type: ignore[override]
        if not file_obj.writable:
            self._refuse(
                file_obj.path,
                FileTransfer.Direction.UPLOAD,
                "writing a handle opened for reading refused",
            )
        await file_obj.remote.write(data, offset)
        file_obj.saw(offset, data)
        return len(data)

    async def close(self, file_obj: _Transfer) -> None:  # type: ignore[override]
        try:
            await file_obj.remote.close()
        finally:
            if file_obj.direction == FileTransfer.Direction.UPLOAD or file_obj.size:
                size, digest = await self._digest(file_obj)
                self.live.file(_text(file_obj.path), file_obj.direction, size, digest)

    async def _digest(self, file_obj: _Transfer) -> tuple[int, str]:
        """The file's SHA-256: the running hash when the transfer went in
        order, else read back from the device (what is there now)."""
        if file_obj.in_order and file_obj.next_offset == file_obj.size:
            return file_obj.size, file_obj.hash.hexdigest()
        try:
            client = await self._device()
            digest = hashlib.sha256()
            size = 0
            async with client.open(file_obj.path, "rb") as fh:
                while block := await fh.read(256 * 1024):
                    digest.update(block)
                    size += len(block)
            return size, digest.hexdigest()
        except (asyncssh.Error, OSError):
            return file_obj.size, ""

    async def fstat(self, file_obj: _Transfer) -> SFTPAttrs:  # type: ignore[override]
        return await file_obj.remote.stat()

    async def fsetstat(self, file_obj: _Transfer, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        self._need_upload(file_obj.path, "changing")
        await file_obj.remote.setstat(attrs)

    async def fsync(self, file_obj: _Transfer) -> None:  # type: ignore[override]
        await file_obj.remote.fsync()

    def lock(self, *args: object) -> None:
        raise asyncssh.SFTPOpUnsupported("byte-range locks are not supported")

    def unlock(self, *args: object) -> None:
        raise asyncssh.SFTPOpUnsupported("byte-range locks are not supported")

    # -- names ------------------------------------------------------------------

    async def realpath(self, path: bytes) -> bytes:  # type: ignore[override]
        self._need_metadata(path)
        result = await (await self._device()).realpath(path)
        return result if isinstance(result, bytes) else result.encode()

    async def stat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        self._need_metadata(path)
        return await (await self._device()).stat(path)

    async def lstat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        self._need_metadata(path)
        return await (await self._device()).lstat(path)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:  # type: ignore[override]
        self._need_metadata(path)
        client = await self._device()
        async for name in client.scandir(path):
            yield name

    async def readlink(self, path: bytes) -> bytes:  # type: ignore[override]
        self._need_metadata(path)
        result = await (await self._device()).readlink(path)
        return result if isinstance(result, bytes) else result.encode()

    async def statvfs(self, path: bytes) -> object:  # type: ignore[override]
        self._need_metadata(path)
        return await (await self._device()).statvfs(path)

    async def fstatvfs(self, file_obj: _Transfer) -> object:  # type: ignore[override]
        return await file_obj.remote.statvfs()

    # -- changes (uploads) ---------------------------------------------------------

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        self._need_upload(path, "changing")
        await (await self._device()).setstat(path, attrs)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        self._need_upload(path, "changing")
        await (await self._device()).setstat(path, attrs, follow_symlinks=False)

    async def remove(self, path: bytes) -> None:  # type: ignore[override]
        self._need_upload(path, "removing")
        await (await self._device()).remove(path)

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        self._need_upload(path, "creating")
        await (await self._device()).mkdir(path, attrs)

    async def rmdir(self, path: bytes) -> None:  # type: ignore[override]
        self._need_upload(path, "removing")
        await (await self._device()).rmdir(path)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        self._need_upload(oldpath, "renaming")
        await (await self._device()).rename(oldpath, newpath)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        self._need_upload(oldpath, "renaming")
        await (await self._device()).posix_rename(oldpath, newpath)

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        self._need_upload(newpath, "creating")
        await (await self._device()).symlink(oldpath, newpath)

    async def link(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        self._need_upload(newpath, "creating")
        await (await self._device()).link(oldpath, newpath)

    def exit(self) -> None:
        if self._client is not None:
            self._client.exit()
            self._client = None
        # OpenSSH's scp and sftp judge success by the channel's exit status,
        # which asyncssh's SFTP server does not send by itself.
        chan = self.channel
        if chan is not None and not chan.is_closing() and chan.get_command() is None:
            chan.exit(0)
