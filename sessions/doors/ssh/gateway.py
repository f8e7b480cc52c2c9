"""The SSH gateway: vendors' own OpenSSH/PuTTY/scp/sftp in, Airlock's login out.

    ssh -p 2222 alice+plc-7@airlock     # user part before the last '+', device after

Order of events on one connection:
1. TCP accept. More than GATEWAY_MAX_UNAUTH_PER_ADDRESS connections from one
   address that have not authenticated yet: the new one is dropped. Login
   grace: GATEWAY_LOGIN_GRACE seconds to authenticate, then closed.
2. Public key only (keys registered in the portal). After the signature is
   verified `authorize(user, device, protocol="ssh", at=now, source_ip=peer)`
   decides; a denial is sent as an auth banner (the vendor reads the sentence
   on stderr), audited, and nothing is dialled.
3. If the device's zone requires it, keyboard-interactive TOTP follows as a
   second factor (partial success); a client that skips it gets no channel.
4. The gateway dials the device's configured endpoint with the vaulted
   credential, accepting only the pinned host key, and opens a LiveSession
   (sessions/live/core.py). Only then is authentication reported as successful.
5. Channels: shell/exec with pty, env allow-list, window changes, signals,
   exit status; sftp and scp terminated here (sessions/doors/ssh/sftp.py); `-L` only to
   the device's own address on the grant's ports. Everything else is refused.

Every hook that can fail denies: exceptions end up as a refusal, never as an
open door. Database work runs in plain sync functions through
database_sync_to_async.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String
from asyncssh.public_key import decode_ssh_public_key
from asyncssh.stream import SSHServerStreamSession
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from broker import audit
from broker.access import AccessDenied, Decision, authorize
from broker.models import Device, Grant, SSHPublicKey, User
from sessions.doors.ssh.sftp import DeviceSFTP
from sessions.live import control as live_control
from sessions.live.core import (
    CIPHERS,
    COMPRESSION,
    DeviceError,
    LiveSession,
    dial_device,
    gateway_id,
    load_device_target,
)
from sessions.models import Command, Session

log = logging.getLogger("airlock.gateway")

EMPTY_STRING = String(b"")
# The device leg may send us large packets (OpenSSH sends up to what the
# receiver advertises, 256 KiB at most): 4x fewer packets to decrypt and
# dispatch in Python than the usual 32 KiB. The window bounds what one
# session can buffer when its vendor reads slowly.
DEVICE_MAX_PACKET = 128 * 1024
DEVICE_WINDOW = 2 * 1024 * 1024
ENV_ALLOWED = re.compile(r"^(LANG|LC_[A-Z_]+|TERM)$")
OTP_ATTEMPTS = 3
# How much of the vendor's input may wait while the device channel opens.
PENDING_INPUT_LIMIT = 256 * 1024


def setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- the gateway's own host key ----------------------------------------------------


def host_key_path() -> Path:
    return Path(setting("GATEWAY_HOST_KEY_FILE", Path(settings.VAR_DIR) / "ssh_host_ed25519_key"))


def private_key_file(path: Path, comment: str) -> asyncssh.SSHKey:
    """An ed25519 key kept in `path` (0600): generated on first use, reused
    after. Written to a private temporary file and linked into place, so two
    processes starting at once agree on one key and never read half a file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.export_private_key())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won; use its key
        finally:
            tmp.unlink()
    return asyncssh.read_private_key(str(path))


def load_host_key() -> asyncssh.SSHKey:
    """The gateway's host key: generated once into var/ (0600), reused after."""
    return private_key_file(host_key_path(), "airlock-gateway")


def host_key_fingerprint() -> str:
    """SHA256:... fingerprint of the gateway's host key, as `ssh` shows it."""
    return load_host_key().get_fingerprint("sha256")


def host_key_line() -> str:
    """The public host key as a known_hosts/authorized_keys style line."""
    return load_host_key().export_public_key("openssh").decode().strip()


# --- plain sync functions (database) ------------------------------------------------


@dataclass
class Login:
    """Who asked for what: the two halves of `user+device`."""

    user: User | None
    device: Device | None
    username: str
    slug: str


def parse_login(login: str) -> Login:
    username, plus, slug = login.rpartition("+")
    user = device = None
    if plus and username and slug:
        user = User.objects.filter(username=username).select_related("vendor").first()
        device = Device.objects.filter(slug=slug).select_related("zone__site").first()
    return Login(user=user, device=device, username=username, slug=slug)


def key_belongs_to(user: User, fingerprint: str) -> bool:
    return SSHPublicKey.objects.filter(user=user, fingerprint=fingerprint).exists()


def decide(user: User, device: Device, source_ip: str | None, fingerprint: str) -> Decision:
    """authorize() for the gateway; records the key's use. Raises AccessDenied."""
    decision = authorize(user, device, protocol="ssh", at=timezone.now(), source_ip=source_ip)
    SSHPublicKey.objects.filter(user=user, fingerprint=fingerprint).update(
        last_used_at=timezone.now()
    )
    return decision


def record_denial(
    login: str,
    user: User | None,
    device: Device | None,
    source_ip: str | None,
    reason: str,
    message: str,
) -> None:
    audit.record(
        "gateway.denied",
        actor=user or login[:150],
        target=f"device {device.slug}" if device else f"login {login[:100]}",
        source_ip=source_ip,
        data={"reason": reason, "message": message, "door": "ssh"},
    )


def verify_totp(user: User, token: str) -> bool:
    from broker.models import TOTPDevice

    token = token.strip()
    if not token.isdigit():
        return False
    return any(d.verify_token(token) for d in TOTPDevice.objects.filter(user=user, confirmed=True))


# --- connection limits --------------------------------------------------------------


class AddressLimiter:
    """Counts connections that have not authenticated yet, per address."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.counts: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        if (
            self.counts.get(address, 0) >= self.per_address
            or sum(self.counts.values()) >= self.total
        ):
            return False
        self.counts[address] = self.counts.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        left = self.counts.get(address, 0) - 1
        if left > 0:
            self.counts[address] = left
        else:
            self.counts.pop(address, None)


# --- the SSH server ------------------------------------------------------------------


class GatewayConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection, changed in two ways.

    Authentication: asyncssh reports a verified public key straight to
    success; a gateway must decide after the signature (not on the unsigned
    key query, so no one holding only a public key learns anything) and may
    need partial success (validate_public_key, send_userauth_failure).

    The relay's hot path: one socket write per device chunk (relay, _send)
    and no CBC-era empty MSG_IGNORE before each packet (send_packet)."""

    _owner: GatewayServer

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        if not await super().validate_public_key(username, key_data, msg, signature):
            return False
        if not msg:
            return True  # the unsigned query: "would this key do?"
        try:
            return await self._owner.key_proven(username, decode_ssh_public_key(key_data))
        except Exception:
            log.exception("gateway: deciding a login failed; denying")
            return False

    def send_userauth_failure(self, partial_success: bool) -> None:
        super().send_userauth_failure(partial_success or self._owner.key_ok)

    _corked: list[bytes] | None = None

    def _send(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            super()._send(data)

    def relay(self, chan: asyncssh.SSHServerChannel, data: bytes, datatype: Any = None) -> None:
        """Write a device chunk to the vendor in one socket write: asyncssh
        cuts it into packets of the vendor's size (32 KiB for OpenSSH) and
        would hand each to the kernel separately. Flushed before returning,
        so nothing is held back and the order of packets is unchanged."""
        self._corked = []
        try:
            if datatype == asyncssh.EXTENDED_DATA_STDERR:
                chan.write_stderr(data)
            else:
                chan.write(data)
        finally:
            chunks, self._corked = self._corked, None
            if chunks:
                super()._send(b"".join(chunks))

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        # asyncssh puts an empty MSG_IGNORE before every packet, a defence for
        # CBC ciphers. The gateway offers none (CIPHERS), and the extra packet
        # costs an encryption and a send per data packet on the relay's hot path.
        if pkttype == MSG_IGNORE and args == (EMPTY_STRING,):
            return
        super().send_packet(pkttype, *args, handler=handler)


class GatewayServer(asyncssh.SSHServer):
    """One vendor connection's hooks."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: GatewayConnection | None = None
        self.peer: str | None = None
        self.counted = False
        self.login_text = ""
        self.login: Login | None = None
        self.key_ok = False
        self.denied = False
        # The denial sentence, offered once more as a keyboard-interactive
        # instruction for clients (PuTTY) that drop a banner when no
        # authentication method is left; that round can never succeed.
        self.denial_text = ""
        self.fingerprint = ""
        self.otp_failures = 0
        self.grant: Grant | None = None
        self.code_required = True  # until authorize() says otherwise
        self.live: LiveSession | None = None
        self.channels: set[VendorChannel] = set()

    # -- connection --------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn  # type: ignore[assignment]
        self.peer = conn.get_extra_info("peername", ("", 0))[0] or None
        if self.gateway.limiter.admit(self.peer or "?"):
            self.counted = True
        else:
            log.warning(
                "gateway: too many unauthenticated connections from %s; dropping one", self.peer
            )
            asyncio.get_running_loop().call_soon(conn.abort)

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.gateway.limiter.release(self.peer or "?")

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self.live is not None and not self.live.ended:
            self.gateway.spawn(self.live.close("the vendor disconnected"))

    def auth_completed(self) -> None:
        self._uncount()

    # -- authentication ----------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        if self.login_text and username != self.login_text:
            # A second user name on one connection: what the first one proved
            # (its key) must never count for the second. Refuse the connection.
            self.denied = True
            self.key_ok = False
            return True
        self.login_text = username
        if "+" not in username:
            self._banner(
                f"Airlock: log in as <your user name>+<device>, for example "
                f"{username or 'alice'}+plc-7."
            )
        try:
            self.login = await database_sync_to_async(parse_login)(username)
        except Exception:
            log.exception("gateway: looking up %r failed", username[:100])
            self.denied = True
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return not self.key_ok and not self.denied

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        login = self.login
        if self.denied or login is None or login.user is None or login.device is None:
            return False
        if username != self.login_text:
            return False
        return await database_sync_to_async(key_belongs_to)(
            login.user, key.get_fingerprint("sha256")
        )

    async def key_proven(self, username: str, key: asyncssh.SSHKey) -> bool:
        """The vendor proved the key. Decide, then maybe ask for the TOTP."""
        login = self.login
        assert login is not None and login.user is not None and login.device is not None
        self.fingerprint = key.get_fingerprint("sha256")
        if not await self._authorize():
            return False
        if self.code_required:
            self.key_ok = True  # partial success: keyboard-interactive next
            return False
        return await self._connect_device()

    def kbdint_auth_supported(self) -> bool:
        if self.denied:
            return bool(self.denial_text)
        return self.key_ok and self.live is None

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        if self.denied:
            text, self.denial_text = self.denial_text, ""
            return ("Airlock", text, "", [])  # no prompts: nothing to answer
        zone = self.login.device.zone if self.login and self.login.device else None
        return (
            "Airlock one-time code",
            f"{zone.name if zone else 'This zone'} asks for a one-time code on every connection.",
            "",
            [("One-time code (TOTP): ", False)],
        )

    async def validate_kbdint_response(self, username: str, responses: list[str]) -> Any:
        login = self.login
        if (
            not self.key_ok
            or self.denied
            or username != self.login_text
            or login is None
            or login.user is None
            or len(responses) != 1
        ):
            return False
        try:
            ok = await database_sync_to_async(verify_totp)(login.user, responses[0])
        except Exception:
            log.exception("gateway: verifying a TOTP failed; denying")
            ok = False
        if not ok:
            self.otp_failures += 1
            if self.otp_failures >= OTP_ATTEMPTS:
                await self._deny("otp_failed", "the one-time code was wrong too many times")
            else:
                await database_sync_to_async(record_denial)(
                    self.login_text,
                    login.user,
                    login.device,
                    self.peer,
                    "otp_wrong",
                    "a wrong one-time code was entered",
                )
            return False
        # Time passed while the vendor typed: ask again.
        if not await self._authorize():
            return False
        return await self._connect_device()

    async def _authorize(self) -> bool:
        login = self.login
        assert login is not None and login.user is not None and login.device is not None
        try:
            decision = await database_sync_to_async(decide)(
                login.user, login.device, self.peer, self.fingerprint
            )
        except AccessDenied as denial:
            await self._deny(denial.reason, str(denial))
            live_control.signal_denial(
                self.gateway.spawn, login.user, login.device, denial, self.peer
            )
            return False
        self.grant = decision.grant
        self.code_required = decision.connection_code_required
        return True

    async def _connect_device(self) -> bool:
        login = self.login
        assert login is not None and login.user is not None and login.device is not None
        assert self.grant is not None
        try:
            # Fail closed: a gateway that cannot hear terminate starts nothing.
            self.gateway.control.check_admission()
        except live_control.ControlChannelLost as exc:
            await self._deny("control_lost", str(exc))
            return False
        try:
            target = await database_sync_to_async(load_device_target)(login.device)
            device_conn = await dial_device(target)
        except DeviceError as exc:
            await self._deny(exc.reason, str(exc))
            live_control.signal_device_error(self.gateway.spawn, login.device, exc, self.peer)
            return False
        try:
            self.live = await LiveSession.open(
                user=login.user,
                device=login.device,
                grant=self.grant,
                source_ip=self.peer,
                client_kind=Session.ClientKind.NATIVE,
                device_conn=device_conn,
            )
        except Exception:
            device_conn.close()
            log.exception("gateway: opening the session failed")
            await self._deny("session_failed", "Airlock could not start recording this session")
            return False
        self.live.add_closer(self._close_vendor)
        self.live.add_notifier(self._notify)
        self.live.on_end.append(lambda _live: self.gateway.sessions.discard(_live))
        self.gateway.sessions.add(self.live)
        if not await live_control.watch(self.gateway.control, self.live):
            return False
        return True

    async def _deny(self, reason: str, message: str) -> None:
        self.denied = True
        self.denial_text = f"Airlock: access denied: {message}."
        self._banner(self.denial_text)
        login = self.login
        try:
            await database_sync_to_async(record_denial)(
                self.login_text,
                login.user if login else None,
                login.device if login else None,
                self.peer,
                reason,
                message,
            )
        finally:
            # Let the banner and the failure reply go out, then hang up.
            asyncio.get_running_loop().call_later(0.5, self._hang_up)

    def _hang_up(self) -> None:
        if self.conn is not None and self.live is None:
            self.conn.close()

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            try:
                self.conn.send_auth_banner(text + "\r\n")
            except Exception:
                log.debug("banner not sent", exc_info=True)

    # -- after authentication ----------------------------------------------------

    def _notify(self, line: str) -> None:
        for channel in list(self.channels):
            channel.notice(line)

    async def _close_vendor(self, message: str) -> None:
        for channel in list(self.channels):
            channel.end(message)
        if self.conn is not None:
            if message:
                self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message[:200])
            else:
                self.conn.close()

    def session_requested(self) -> Any:
        if self.live is None or self.live.ended:
            return False
        return VendorChannel(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        live, login = self.live, self.login
        if live is None or live.ended or login is None or login.device is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "no session")
        device = login.device
        if dest_host not in {device.slug, device.ssh_host}:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"Airlock forwards only to {device.slug} itself, not to {dest_host[:100]}",
            )
        if dest_port not in live.forward_ports:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"your grant does not allow forwarding to port {dest_port} on {device.slug}",
            )
        live.command(f"ssh -L {device.slug}:{dest_port}", Command.Kind.EXEC)
        assert self.conn is not None
        # The gateway dials the device's configured address, never a name the client sent.
        return self.conn.forward_connection(device.ssh_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # remote forwarding (-R) is never allowed

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


class VendorChannel(asyncssh.SSHServerSession):
    """One session channel from the vendor, relayed to one channel on the device.

    Flow control is end to end: when one side's send buffer is full, the
    other side stops reading, so memory stays bounded however fast a side is."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        live = server.live
        assert live is not None
        self.live: LiveSession = live
        self.chan: asyncssh.SSHServerChannel | None = None
        self.device_chan: asyncssh.SSHClientChannel | None = None
        self.inner: SSHServerStreamSession | None = None
        self.term: str | None = None
        self.size = (80, 24, 0, 0)
        self.modes: dict = {}
        self.pty = False
        self.command: str | None = None
        self.pending: list[bytes] = []
        self.pending_eof = False
        self.closed = False

    # -- requests before start ------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan
        self.server.channels.add(self)

    def pty_requested(self, term_type: str, term_size: tuple, term_modes: dict) -> bool:
        self.pty = True
        self.term = term_type
        self.size = term_size
        self.modes = term_modes
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        if command.startswith("scp "):
            self._use_sftp()
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._use_sftp()
        return True

    def _use_sftp(self) -> None:
        """SFTP (and legacy scp) are served by asyncssh's stream session around
        DeviceSFTP; this channel only passes its events through."""
        live = self.live
        self.inner = SSHServerStreamSession(None, lambda chan: DeviceSFTP(chan, live), 3, True)
        self.inner.connection_made(self.chan)  # type: ignore[arg-type]

    # -- start -------------------------------------------------------------------

    def session_started(self) -> None:
        if self.inner is not None:
            if self.command:
                self.live.command(self.command, Command.Kind.EXEC)
            self.inner.session_started()
            return
        assert self.chan is not None
        self.chan.pause_reading()
        self.server.gateway.spawn(self._open_device_channel())

    async def _open_device_channel(self) -> None:
        chan, live = self.chan, self.live
        assert chan is not None
        env = {k: v for k, v in chan.get_environment().items() if ENV_ALLOWED.match(k)}
        width, height = self.size[0], self.size[1]
        live.header(width, height, self.term)
        if self.command is not None:
            live.command(self.command, Command.Kind.EXEC)
        try:
            if live.device_conn is None:
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_CONNECT_FAILED, "no device connection"
                )
            device_chan, _ = await live.device_conn.create_session(
                lambda: DeviceChannel(self),
                command=self.command,
                env=env,
                term_type=self.term if self.pty else None,
                term_size=self.size if self.pty else None,
                term_modes=self.modes if self.pty else None,
                encoding=None,
                max_pktsize=DEVICE_MAX_PACKET,
                window=DEVICE_WINDOW,
            )
        except (asyncssh.Error, OSError) as exc:
            text = getattr(exc, "reason", "") or str(exc)
            self.end(f"airlock: the device refused the session ({text})")
            return
        self.device_chan = device_chan
        if self.closed:
            device_chan.close()
            return
        for data in self.pending:
            device_chan.write(data)
        self.pending.clear()
        if self.pending_eof:
            device_chan.write_eof()
        chan.resume_reading()

    # -- vendor → device ------------------------------------------------------------

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.inner is not None:
            self.inner.data_received(data, datatype)
            return
        self.live.input(data, interactive=self.pty and self.command is None)
        if self.device_chan is not None:
            self.device_chan.write(data)
        else:
            self.pending.append(data)
            if sum(map(len, self.pending)) > PENDING_INPUT_LIMIT:
                self.end("airlock: too much input before the device answered")

    def eof_received(self) -> bool:
        if self.inner is not None:
            return bool(self.inner.eof_received())
        if self.device_chan is not None:
            self.device_chan.write_eof()
        else:
            self.pending_eof = True
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.size = (width, height, pixwidth, pixheight)
        self.live.resize(width, height)
        if self.device_chan is not None:
            self.device_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.device_chan is not None:
            self.device_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.device_chan is not None:
            self.device_chan.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()
        elif self.device_chan is not None:
            self.device_chan.pause_reading()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
        elif self.device_chan is not None:
            self.device_chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.channels.discard(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self._stop_device_channel()

    def _stop_device_channel(self) -> None:
        chan, self.device_chan = self.device_chan, None
        if chan is None:
            return
        # Closing the channel alone leaves a command without a pty running on
        # the device (sshd does not kill it): ask for its end first.
        try:
            chan.send_signal("TERM")
        except Exception:
            pass
        chan.close()

    # -- gateway → vendor -------------------------------------------------------------

    def notice(self, line: str) -> None:
        if self.chan is not None and not self.closed:
            self.chan.write_stderr(line.encode())

    def end(self, message: str) -> None:
        """Close this channel, telling the vendor why when there is a reason."""
        self._stop_device_channel()
        if self.chan is None or self.closed:
            return
        if message:
            self.chan.write_stderr(f"\r\n{message}\r\n".encode())
        self.chan.exit(255)


class DeviceChannel(asyncssh.SSHClientSession):
    """The device's half of a VendorChannel."""

    def __init__(self, vendor: VendorChannel) -> None:
        self.vendor = vendor
        self.exit_status: int | None = None
        self.exit_signal: tuple | None = None

    def data_received(self, data: bytes, datatype: Any) -> None:
        vendor = self.vendor
        if vendor.closed or vendor.chan is None:
            return
        vendor.live.output(data)
        vendor.server.conn.relay(vendor.chan, data, datatype)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if not self.vendor.closed and self.vendor.chan is not None:
            self.vendor.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        if self.vendor.chan is not None and not self.vendor.closed:
            self.vendor.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.vendor.chan is not None and not self.vendor.closed:
            self.vendor.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        chan = self.vendor.chan
        if chan is None or self.vendor.closed:
            return
        if self.exit_signal is not None:
            chan.exit_with_signal(*self.exit_signal)
        elif self.exit_status is not None:
            chan.exit(self.exit_status)
        else:
            chan.close()


# --- the listener ----------------------------------------------------------------------


class Gateway:
    """A listening gateway: the acceptor, the limits and the live sessions."""

    def __init__(self) -> None:
        self.limiter = AddressLimiter(
            setting("GATEWAY_MAX_UNAUTH_PER_ADDRESS", 10), setting("GATEWAY_MAX_UNAUTH_TOTAL", 500)
        )
        self.sessions: set[LiveSession] = set()
        self.server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        # Live control: terminate messages, heartbeats, fail closed (sessions/live/control.py).
        self.control = live_control.ControlChannel(gateway_id())

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway: background task failed: %r", task.exception())

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await self.control.start()
        options = asyncssh.SSHServerConnectionOptions(
            server_factory=lambda: GatewayServer(self),
            server_host_keys=[load_host_key()],
            encryption_algs=list(CIPHERS),
            compression_algs=list(COMPRESSION),
            login_timeout=setting("GATEWAY_LOGIN_GRACE", 30),
            keepalive_interval=setting("GATEWAY_KEEPALIVE", 30),
            keepalive_count_max=3,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            kbdint_auth=True,
            password_auth=False,
            public_key_auth=True,
            encoding=None,
            # A relay: the device's pty echoes and edits lines, never the gateway.
            line_editor=False,
            gss_host=None,
            server_version="Airlock",
            config=None,
        )

        def factory() -> GatewayConnection:
            return GatewayConnection(loop, options)

        self.server = await loop.create_server(factory, host, port, backlog=256, reuse_address=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self, reason: str = "the gateway is shutting down") -> None:
        if self.server is not None:
            self.server.close()
        for live in list(self.sessions):
            await live.terminate(reason)
        # Sessions whose vendor had just left close in background tasks:
        # let them write their end (session row, audit event) before the
        # process goes, so no row is left open for the sweep to guess at.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=setting("GATEWAY_STOP_GRACE", 5))
        await self.control.stop()
        if self.server is not None:
            await self.server.wait_closed()


async def start_server(listen_host: str, listen_port: int) -> Gateway:
    """Start a gateway in the running event loop (runbroker and rungateway)."""
    # Keystrokes wait whenever a worker thread (database work, the recording
    # writer) holds the GIL; hand it back to the relay's loop within 0.5 ms
    # instead of Python's default 5 ms.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    gateway = Gateway()
    await gateway.start(listen_host, listen_port)
    log.info(
        "SSH gateway listening on %s:%s (host key %s)",
        listen_host,
        gateway.port,
        host_key_fingerprint(),
    )
    return gateway
