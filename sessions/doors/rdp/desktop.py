"""Browser RDP: one private desktop per session, owned by the broker.

For each RDP session the broker starts, in one new process group:

- `Xvnc` (TigerVNC), a virtual X display that is itself a VNC server,
  listening only on a unix socket in a per-session 0700 directory
  (`-rfbunixpath … -rfbunixmode 0600 -rfbport -1 -nolisten tcp`; without
  `-rfbport -1` it would also listen on every address without
  authentication). Its X display needs the session's own MIT cookie.
- `xfreerdp` full-screen on that display against the device. The vaulted
  password goes to its standard input (`/from-stdin:force`), never into argv
  or the environment; the device's TLS certificate must match the pinned
  SHA-256 (`/cert:deny,fingerprint:…`); clipboard redirection only when the
  grant allows a direction, drive redirection never.
- `ffmpeg`, recording the display (x11grab, ~5 fps, VP8 in WebM written in
  clusters of at most two seconds, so a crash loses little).

The browser reaches the display through a websocket relayed to the unix
socket (sessions/doors/rdp/consumer.py); the RFB stream is parsed on the way
(sessions/doors/rdp/rfb.py). The whole group is killed when the session ends, and a
broker that starts finds and kills the groups a dead broker left behind
(`clean_up_at_start()`: runbroker calls it before it serves, an ASGI server
at its lifespan start-up, and the consumer before a process's first RDP
session in case neither ran; the children also get SIGKILL from the kernel
when the broker process dies).

The programs come from Debian packages (RUNTIME_PACKAGES); a host without
them gets a sentence saying what to install (`missing_programs_sentence()`),
never an obscure failure.

Invariants:
- The password is written once to xfreerdp's stdin and never logged: the
  FreeRDP log is read line by line for connection states and error codes
  only, and no line of it is kept.
- A session is "connected" only once xfreerdp reports the RDP connection
  active (after NLA, the device has accepted the credential). TLS-only
  devices also need the logon notification before vendor input passes.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from broker.models import Credential, Device
from broker.vault import VaultError, open_secret
from sessions.live.core import DeviceError

log = logging.getLogger("airlock.rdp")

MIN_WIDTH, MIN_HEIGHT = 640, 480
MAX_WIDTH, MAX_HEIGHT = 3840, 2160
STOP_GRACE = 5.0
# FreeRDP's connection-state and error lines (its DEBUG log; nothing else of
# it is read or kept).
STATE_RE = re.compile(r"CONNECTION_STATE_(\w+) --> CONNECTION_STATE_(\w+)")
ERROR_RE = re.compile(r"ERRCONNECT_(\w+)")
# The device's Save Session Info PDU: a user is logged on (TLS-only devices).
LOGON_RE = re.compile(r"LogonInfoV[12]:|Logon (?:Info V1|Info V2|Plain Notify)")
# Logon error info: the device's login screen refused the password.
LOGON_FAILED_RE = re.compile(r"LOGON_FAILED_(?:BAD_PASSWORD|UPDATE_PASSWORD|OTHER)")
CERT_RE = re.compile(
    r"certificate (?:not trusted|does not match)|does not match the name|"
    r"fingerprint",
    re.I,
)
CREDENTIAL_ERRORS = {
    "LOGON_FAILURE",
    "AUTHENTICATION_FAILED",
    "WRONG_PASSWORD",
    "ACCOUNT_LOCKED_OUT",
    "ACCOUNT_DISABLED",
    "ACCOUNT_EXPIRED",
    "ACCOUNT_RESTRICTION",
    "PASSWORD_EXPIRED",
    "PASSWORD_MUST_CHANGE",
    "PASSWORD_CERTAINLY_EXPIRED",
    "LOGON_TYPE_NOT_GRANTED",
    "NO_OR_MISSING_CREDENTIALS",
    "INVALID_LOGON_HOURS",
    "INVALID_WORKSTATION",
}
UNREACHABLE_ERRORS = {"CONNECT_FAILED", "DNS_ERROR", "DNS_NAME_NOT_FOUND", "CONNECT_CANCELLED"}
REFUSED_CREDENTIAL = "the device refused Airlock's credential"
# The program each Debian package gives the private desktop.
RUNTIME_PACKAGES = {
    "Xvnc": "tigervnc-standalone-server",
    "xfreerdp": "freerdp2-x11",
    "ffmpeg": "ffmpeg",
}
# The children's PATH (Desktop._env); the programs are looked up there.
CHILD_PATH = "/usr/bin:/bin"


def setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- the device: endpoint, pinned certificate, vaulted credential --------------


@dataclass
class RDPTarget:
    """What one RDP login needs. Holds a secret: never log it."""

    slug: str
    host: str
    port: int
    security: str
    fingerprint: str
    username: str
    domain: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"<RDPTarget {self.username}@{self.host}:{self.port} ({self.security}) secret=***>"


def normalise_fingerprint(text: str) -> str:
    """'AB:cd:…' or 'abcd…' → lower-case colon-separated hex (64 digits)."""
    digits = re.sub(r"[^0-9a-fA-F]", "", text.removeprefix("sha256:")).lower()
    if len(digits) != 64:
        raise ValueError("a SHA-256 fingerprint has 64 hex digits")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def load_rdp_target(device: Device) -> RDPTarget:
    """The device's RDP endpoint, pinned certificate and vaulted RDP
    credential (sync). Raises DeviceError with a sentence for the vendor."""
    if not device.rdp_host:
        raise DeviceError("no_endpoint", f"{device.slug} has no remote desktop endpoint configured")
    if not device.rdp_certificate_sha256.strip():
        raise DeviceError(
            "certificate_not_pinned",
            f"the RDP certificate of {device.slug} is not pinned yet; "
            "ask an administrator to run `manage.py pinrdpcert`",
        )
    credential = Credential.objects.filter(device=device, protocol="rdp").first()
    if credential is None or credential.kind != Credential.Kind.PASSWORD:
        raise DeviceError("no_credential", f"Airlock holds no RDP password for {device.slug}")
    try:
        secret = open_secret(credential)
    except VaultError:
        log.error("the vaulted RDP credential of %s cannot be opened", device.slug)
        raise DeviceError(
            "credential_unreadable", f"Airlock cannot open the credential for {device.slug}"
        )
    domain, _, user = credential.username.rpartition("\\")
    return RDPTarget(
        slug=device.slug,
        host=device.rdp_host,
        port=device.rdp_port,
        security=device.rdp_security or "nla",
        fingerprint=normalise_fingerprint(device.rdp_certificate_sha256),
        username=user,
        domain=domain,
        secret=secret,
    )


def fetch_certificate_fingerprint(host: str, port: int, timeout: float = 10.0) -> str:
    """The SHA-256 of the TLS certificate an RDP server presents: X.224
    connection request asking for TLS or CredSSP, then a TLS handshake that
    checks nothing (the fingerprint is what is checked). Sync."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        negotiation = struct.pack("<BBHI", 1, 0, 8, 0x3)  # RDP_NEG_REQ: TLS | CredSSP
        x224 = bytes([6 + len(negotiation), 0xE0, 0, 0, 0, 0, 0]) + negotiation
        sock.sendall(struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224)
        header = _recv_exactly(sock, 4)
        if header[0] != 3:
            raise OSError("the device did not answer with an RDP connection confirm")
        body = _recv_exactly(sock, struct.unpack(">H", header[2:4])[0] - 4)
        if len(body) >= 8 and body[7] == 3:
            raise OSError("the device refused TLS (it offers only legacy RDP security)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("the device presented no certificate")
    return normalise_fingerprint(hashlib.sha256(der).hexdigest())


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("the device closed the connection during negotiation")
        data += chunk
    return data


async def check_certificate(target: RDPTarget) -> None:
    """Refuse before anything else when the device presents another
    certificate than the pinned one (xfreerdp refuses it too)."""
    try:
        presented = await asyncio.to_thread(
            fetch_certificate_fingerprint,
            target.host,
            target.port,
            float(setting("RDP_CONNECT_TIMEOUT", 20)),
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise DeviceError("device_unreachable", f"{target.slug} is unreachable ({exc})") from None
    if presented != target.fingerprint:
        error = DeviceError(
            "certificate_mismatch",
            f"{target.slug} presented an RDP certificate that does not match the "
            "pinned one; Airlock refused to log in",
        )
        error.presented = presented  # type: ignore[attr-defined]
        raise error


# --- the private desktop -------------------------------------------------------


def run_dir() -> Path:
    path = Path(setting("RDP_RUN_DIR", Path(settings.VAR_DIR) / "rdp"))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def clamp_size(width: Any, height: Any) -> tuple[int, int]:
    """The browser's viewport, bounded, even (video encoders want even sizes)."""

    def number(value: Any, low: int, high: int, default: int) -> int:
        try:
            n = int(value)
        except (TypeError, ValueError):
            return default
        return min(max(n, low), high)

    w = number(width, MIN_WIDTH, MAX_WIDTH, 1280)
    h = number(height, MIN_HEIGHT, MAX_HEIGHT, 800)
    return w - w % 2, h - h % 2


def xauthority(cookie: bytes) -> bytes:
    """An Xauthority file with one MIT-MAGIC-COOKIE-1 entry for any display
    (family Wild): only holders of the file may use the private display."""

    def field_(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    return (
        struct.pack(">H", 0xFFFF)
        + field_(b"")
        + field_(b"")
        + field_(b"MIT-MAGIC-COOKIE-1")
        + field_(cookie)
    )


def in_group(pgid: int, *, umask: int | None = None) -> Any:
    """A preexec function putting the child into process group `pgid` (0: a
    new group it leads). Written as preexec_fn rather than Popen's
    process_group= because uvloop (uvicorn's loop) does not accept that."""

    def setup() -> None:
        os.setpgid(0, pgid)
        # Die with the broker: a killed broker must not leave a desktop logged
        # in to a device that nobody controls (PR_SET_PDEATHSIG = 1).
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        if umask is not None:
            os.umask(umask)

    return setup


_libc = ctypes.CDLL(None, use_errno=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def missing_programs_sentence(path: str = CHILD_PATH) -> str:
    """ "" when this host can run remote desktops; otherwise a sentence
    naming the Debian packages to install."""
    missing = [
        pkg for program, pkg in RUNTIME_PACKAGES.items() if shutil.which(program, path=path) is None
    ]
    if not missing:
        return ""
    # Short: it is also a websocket close reason (at most 123 bytes).
    return f"browser RDP is unavailable here until an administrator installs {', '.join(missing)}"


_cleaned_up = False


def clean_up_at_start() -> int:
    """Remove the desktops a dead broker left behind, once per process.
    Never raises: a start-up must not fail over a stale directory."""
    global _cleaned_up
    if _cleaned_up:
        return 0
    _cleaned_up = True
    try:
        return cleanup_orphans()
    except OSError as exc:
        log.error("could not look for orphaned remote desktops: %s", exc)
        return 0


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol for broker.asgi: an ASGI server hosting
    the RDP consumers (uvicorn, daphne) cleans up orphans as it starts."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.to_thread(clean_up_at_start)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def cleanup_orphans() -> int:
    """Kill the desktops a dead broker process left behind and remove their
    directories. A directory whose owner is still alive (another broker
    process on this host) is left alone. Returns how many were removed."""
    removed = 0
    for entry in run_dir().iterdir():
        owner_file = entry / "owner"
        if not entry.is_dir() or entry.is_symlink():
            continue
        try:
            owner_pid, pgid = (int(x) for x in owner_file.read_text().split()[:2])
        except (OSError, ValueError):
            owner_pid, pgid = 0, 0
        if owner_pid and owner_pid != os.getpid() and process_alive(owner_pid):
            continue
        if owner_pid == os.getpid():
            continue
        if pgid and _group_leader_is_ours(pgid, entry):
            kill_group(pgid)
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
        log.warning("removed an orphaned remote desktop (%s)", entry.name)
    return removed


def _group_leader_is_ours(pgid: int, directory: Path) -> bool:
    """The group's leader is the Xvnc of that directory (so a reused pid
    is never killed)."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory).encode() in cmdline


class DesktopError(DeviceError):
    """The desktop could not be started or the device refused it."""


class Desktop:
    """The processes of one RDP session: Xvnc, xfreerdp and ffmpeg in one
    process group (the Xvnc's), in one 0700 directory."""

    def __init__(
        self, *, width: int, height: int, allow_upload: bool, allow_download: bool
    ) -> None:
        self.width, self.height = width, height
        self.allow_upload, self.allow_download = allow_upload, allow_download
        self.dir = run_dir() / secrets.token_hex(8)
        self.dir.mkdir(mode=0o700)
        self.socket_path = self.dir / "rfb.sock"
        if len(str(self.socket_path).encode()) > 100:
            self.dir.rmdir()
            raise DesktopError("desktop_failed", "RDP_RUN_DIR is too long a path for a unix socket")
        self.xauth_path = self.dir / "Xauthority"
        self.display = ""
        self.pgid = 0
        self.xvnc: asyncio.subprocess.Process | None = None
        self.rdp: asyncio.subprocess.Process | None = None
        self.ffmpeg: asyncio.subprocess.Process | None = None
        self.active = asyncio.Event()
        self.logged_on = asyncio.Event()
        self.logon_failed = asyncio.Event()
        self.rdp_exited = asyncio.Event()
        self.states: list[str] = []
        self.errors: list[str] = []
        self.certificate_refused = False
        self.stopped = False
        self._log_task: asyncio.Task | None = None

    # -- start -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """The only environment the children get: no secret, no inherited
        variables that change how they behave."""
        return {
            "PATH": CHILD_PATH,
            "LANG": "C.UTF-8",
            "HOME": str(self.dir),
            "DISPLAY": self.display,
            "XAUTHORITY": str(self.xauth_path),
        }

    async def start_display(self) -> None:
        fd = os.open(self.xauth_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(xauthority(secrets.token_bytes(16)))
        read_fd, write_fd = os.pipe()
        args = [
            "Xvnc",
            "-displayfd",
            str(write_fd),
            "-auth",
            str(self.xauth_path),
            "-rfbunixpath",
            str(self.socket_path),
            "-rfbunixmode",
            "0600",
            "-rfbport",
            "-1",
            # Local (abstract) sockets stay on: with them off, -displayfd can pick
            # a number another X server answers on, and xfreerdp would draw there.
            "-nolisten",
            "tcp",
            "-SecurityTypes",
            "None",
            "-geometry",
            f"{self.width}x{self.height}",
            "-depth",
            "24",
            "-AlwaysShared",
            "-DisconnectClients=0",
            "-AcceptSetDesktopSize=0",
            f"-AcceptCutText={int(self.allow_upload)}",
            f"-SendCutText={int(self.allow_download)}",
            "-SetPrimary=0",
            "-SendPrimary=0",
            "-desktop",
            "Airlock",
            "-noreset",
        ]
        try:
            self.xvnc = await asyncio.create_subprocess_exec(
                *args,
                pass_fds=(write_fd,),
                preexec_fn=in_group(0),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env={"PATH": CHILD_PATH, "HOME": str(self.dir)},
                cwd=self.dir,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise DesktopError(
                "desktop_failed", f"the private display could not start ({exc.strerror})"
            )
        os.close(write_fd)
        self.pgid = self.xvnc.pid
        try:
            (self.dir / "owner").write_text(f"{os.getpid()} {self.pgid}\n")
        except OSError:
            os.close(read_fd)  # the caller stops the desktop
            raise DesktopError("desktop_failed", "the private display could not start") from None
        try:
            number = await display_number(read_fd, timeout=10)
        except (TimeoutError, ValueError, OSError):
            number = ""
        if not number or not self.socket_path.exists():
            await self.stop()
            raise DesktopError("desktop_failed", "the private display could not start")
        self.display = f":{number}"

    async def connect(self, target: RDPTarget, *, timeout: float) -> None:
        """Run xfreerdp against the device and wait until the RDP connection is
        active. Raises DesktopError with the vendor's sentence otherwise."""
        args = [
            # Line-buffered: FreeRDP logs through stdio, which a pipe makes
            # block-buffered, so the "ACTIVE" line could sit unflushed in
            # xfreerdp while little else is logged (as with the clipboard
            # channel on) and a working connection would look timed out.
            "stdbuf",
            "-oL",
            "xfreerdp",
            f"/v:{target.host}:{target.port}",
            f"/u:{target.username}",
            f"/d:{target.domain}",
            "/from-stdin:force",
            f"/sec:{target.security}",
            f"/cert:deny,fingerprint:sha256:{target.fingerprint}",
            # -toggle-fullscreen: Ctrl+Alt+Enter from the vendor goes to the
            # device instead of shrinking the desktop into a window.
            "/f",
            "-toggle-fullscreen",
            "/bpp:24",
            "/log-level:DEBUG",
            "-decorations",
            "-grab-keyboard",
            "+clipboard" if (self.allow_upload or self.allow_download) else "-clipboard",
            "-drives",
            "-home-drive",
            "/audio-mode:2",
            "-wallpaper",
            "-themes",
            "/auto-reconnect-max-retries:0",
        ]
        try:
            self.rdp = await asyncio.create_subprocess_exec(
                *args,
                preexec_fn=in_group(self.pgid),
                stdin=asyncio.subprocess.PIPE,
                # FreeRDP logs below WARN to stdout and the rest to stderr: one pipe.
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(),
                cwd=self.dir,
            )
        except OSError as exc:
            await self.stop()
            raise DesktopError("desktop_failed", f"the RDP client could not start ({exc.strerror})")
        assert self.rdp.stdin is not None
        # The password travels only here, once.
        self.rdp.stdin.write(target.secret.encode() + b"\n")
        try:
            await self.rdp.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.rdp.stdin.close()
        self._log_task = asyncio.ensure_future(self._read_log())
        active = asyncio.ensure_future(self.active.wait())
        exited = asyncio.ensure_future(self.rdp_exited.wait())
        try:
            await asyncio.wait(
                {active, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            active.cancel()
            exited.cancel()
        if self.active.is_set() and not self.rdp_exited.is_set():
            return
        failure = self.failure(target.slug, timed_out=not self.rdp_exited.is_set())
        await self.stop()
        raise failure

    async def _read_log(self) -> None:
        assert self.rdp is not None and self.rdp.stdout is not None
        while True:
            try:
                line = await self.rdp.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: not one of ours
            if not line:
                break
            text = line.decode("utf-8", "replace")
            state = STATE_RE.search(text)
            if state:
                self.states.append(state.group(2))
                if state.group(2) == "ACTIVE":
                    self.active.set()
            error = ERROR_RE.search(text)
            if error:
                self.errors.append(error.group(1))
            if LOGON_RE.search(text):
                self.logged_on.set()
            if LOGON_FAILED_RE.search(text):
                self.logon_failed.set()
            if "com.freerdp.crypto" in text and CERT_RE.search(text):
                self.certificate_refused = True
        await self.rdp.wait()
        self.rdp_exited.set()

    def failure(self, slug: str, *, timed_out: bool) -> DesktopError:
        """Why the connection did not become active, as the vendor reads it."""
        errors = set(self.errors)
        in_nla = "NLA" in self.states and not any(
            s in self.states for s in ("MCS_CONNECT", "MCS_CREATE_REQUEST", "ACTIVE")
        )
        if errors & CREDENTIAL_ERRORS or (in_nla and not timed_out):
            return DesktopError("device_auth_failed", REFUSED_CREDENTIAL)
        if self.certificate_refused or "TLS_CONNECT_FAILED" in errors and self.certificate_refused:
            return DesktopError(
                "certificate_mismatch",
                f"{slug} presented an RDP certificate that does not match the pinned one",
            )
        if timed_out:
            return DesktopError("device_timeout", f"{slug} did not open a remote desktop in time")
        if errors & UNREACHABLE_ERRORS or not self.states or self.states == ["NEGO"]:
            return DesktopError("device_unreachable", f"{slug} is unreachable")
        code = sorted(errors)[0].lower() if errors else "unknown"
        return DesktopError(
            "device_protocol", f"the remote desktop connection to {slug} failed ({code})"
        )

    async def start_recording(self, path: Path, fps: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        args = [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-n",
            "-f",
            "x11grab",
            "-draw_mouse",
            "1",
            "-framerate",
            str(fps),
            "-video_size",
            f"{self.width}x{self.height}",
            "-i",
            f"{self.display}.0+0,0",
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "600k",
            "-g",
            str(fps * 4),
            "-pix_fmt",
            "yuv420p",
            "-f",
            "webm",
            "-cluster_time_limit",
            "2000",
            "-cluster_size_limit",
            "4000000",
            str(path),
        ]
        self.ffmpeg = await asyncio.create_subprocess_exec(
            *args,
            preexec_fn=in_group(self.pgid, umask=0o077),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=self._env(),
            cwd=self.dir,
        )

    def recorder_alive(self) -> bool:
        return self.ffmpeg is not None and self.ffmpeg.returncode is None

    async def open_rfb(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 20)

    # -- stop ------------------------------------------------------------------

    async def stop(self) -> None:
        """Finish the video (ffmpeg writes its last cluster on SIGINT), then
        kill the whole group and remove the directory. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        if self.ffmpeg is not None and self.ffmpeg.returncode is None:
            try:
                self.ffmpeg.send_signal(signal.SIGINT)
                await asyncio.wait_for(self.ffmpeg.wait(), STOP_GRACE)
            except (TimeoutError, ProcessLookupError):
                pass
        if self.pgid:
            kill_group(self.pgid)
        for proc in (self.rdp, self.xvnc, self.ffmpeg):
            if proc is not None:
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE)
                except TimeoutError:
                    log.error("a remote desktop process (pid %s) did not exit", proc.pid)
        if self._log_task is not None:
            try:
                await asyncio.wait_for(self._log_task, STOP_GRACE)
            except (TimeoutError, asyncio.CancelledError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


async def display_number(fd: int, *, timeout: float) -> str:
    """The display number Xvnc writes, with a newline, to -displayfd: read
    in the event loop (no thread left blocked on the pipe if Xvnc hangs).
    Takes ownership of `fd` and closes it."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    reader = asyncio.StreamReader(limit=64)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        transport.close()
        await asyncio.sleep(0)  # the transport closes the pipe on the next turn
    text = line.decode("ascii", "replace").strip()
    if not text.isdigit():
        raise ValueError("no display number")
    return text


__all__ = [
    "Desktop",
    "DesktopError",
    "RDPTarget",
    "load_rdp_target",
    "check_certificate",
    "fetch_certificate_fingerprint",
    "normalise_fingerprint",
    "cleanup_orphans",
    "clean_up_at_start",
    "lifespan",
    "missing_programs_sentence",
    "RUNTIME_PACKAGES",
    "clamp_size",
    "REFUSED_CREDENTIAL",
]
