"""A real RDP server on loopback as the device, for the browser RDP tests.

Debian's xrdp needs root, PAM and a system-wide sesman; FreeRDP's shadow
server runs unprivileged on any free port, so the device here is
`freerdp-shadow-cli` sharing an `Xvfb` display, started by the product's
demo desktop code (sessions/demordp.start_desktop). The display's "session
script" paints the root window BACKGROUND and runs an xterm whose shell
writes every typed line to a file (`RDPServer.typed()`), so a test can read
back on the server side what the vendor typed in the browser.

NLA checks the login against an NTLM SAM file written with winpr-hash for
DEVICE_USER/DEVICE_PASSWORD; a wrong vaulted password is refused by the
server's CredSSP, exactly as a Windows device would refuse it. With TLS-only
security the shadow server checks the credential with PAM against a local
account once the connection is active (tests/support/sshd.py's device account).

    from tests.support.rdpserver import rdp_server, rdp_vendor  # noqa: F401  (fixtures)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker import vault
from broker.models import Credential, Device
from sessions.demo.rdp import RDPDevice, start_desktop
from tests.conftest import IN_CI, free_port

DEVICE_USER = "plcadmin"
DEVICE_PASSWORD = "rdp-device-pass-7c2e"
BACKGROUND = (0x3A, 0x7D, 0x44)
PROGRAMS = (
    "Xvfb",
    "xsetroot",
    "xterm",
    "xdotool",
    "freerdp-shadow-cli",
    "winpr-hash",
    "Xvnc",
    "xfreerdp",
    "ffmpeg",
)
PACKAGES = (
    "xvfb x11-xserver-utils xterm xdotool freerdp2-shadow-x11 winpr-utils "
    "tigervnc-standalone-server freerdp2-x11 ffmpeg"
)


def need_programs() -> None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        message = (
            f"browser RDP tests need {', '.join(missing)}: apt-get install {PACKAGES} "
            "(`make test` does as root)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class RDPServer(RDPDevice):
    """The product's demo desktop (sessions/demo/rdp.py) with an xterm that
    keeps every typed line."""

    @property
    def typed_file(self) -> Path:
        return self.dir / "typed.txt"

    def typed(self) -> str:
        try:
            return self.typed_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connections(self) -> int:
        """Established TCP connections to the server's port (from /proc)."""
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                local_port = int(parts[1].rsplit(":", 1)[1], 16)
                if local_port == self.port and parts[3] == "01":
                    count += 1
        return count


def start_rdp_server(*, security: str = "nla") -> RDPServer:
    need_programs()
    directory = Path(tempfile.mkdtemp(prefix="airlock-rdp-device-"))
    # The "session script": a small terminal whose shell keeps every typed line.
    try:
        device = start_desktop(
            port=free_port(),
            home=directory,
            username=DEVICE_USER,
            password=DEVICE_PASSWORD,
            security=security,
            background=BACKGROUND,
            program=["sh", "-c", f"cat > {directory / 'typed.txt'}"],
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return RDPServer(
        port=device.port,
        display=device.display,
        dir=device.dir,
        fingerprint=device.fingerprint,
        procs=device.procs,
        scratch=device.scratch,
        owns_dir=True,
    )


@pytest.fixture
def rdp_server() -> Iterator[RDPServer]:
    server = start_rdp_server()
    yield server
    server.stop()


def pin_rdp_device(
    device: Device,
    server: RDPServer,
    *,
    password: str = DEVICE_PASSWORD,
    security: str = "nla",
    username: str = DEVICE_USER,
) -> None:
    device.rdp_host = "127.0.0.1"
    device.rdp_port = server.port
    device.rdp_certificate_sha256 = server.fingerprint
    device.rdp_security = security
    device.save()
    kid, blob = vault.seal(password)
    Credential.objects.update_or_create(
        device=device,
        protocol="rdp",
        defaults={
            "username": username,
            "kind": Credential.Kind.PASSWORD,
            "key_id": kid,
            "ciphertext": blob,
        },
    )


@pytest.fixture
def rdp_vendor(
    rdp_server: RDPServer,
    make_vendor_user: Callable,
    make_device: Callable,
    make_grant: Callable,
    settings: Any,
) -> Iterator[Callable[..., Any]]:
    """make(**grant_kw) -> (user, device, grant) on the rdp_server device."""
    # Short: a unix socket path has at most 107 bytes (pytest's tmp_path is long).
    run_dir = Path(tempfile.mkdtemp(prefix="arl-rdp-"))
    settings.RDP_RUN_DIR = run_dir
    settings.RDP_DISCONNECT_GRACE = 0.5

    def make(*, password: str = DEVICE_PASSWORD, security: str = "nla", **grant_kw: Any) -> Any:
        user = make_vendor_user()
        device = (
            make_device(ssh_host="", zone=grant_kw.pop("zone", None))
            if "zone" in grant_kw
            else make_device(ssh_host="")
        )
        pin_rdp_device(device, rdp_server, password=password, security=security)
        grant = make_grant(user, device, protocols=["rdp"], **grant_kw)
        return user, device, grant

    yield make
    shutil.rmtree(run_dir, ignore_errors=True)
