"""The demo's simulated HMI: a remote desktop a newcomer opens in the browser
(`make run DEMO=1`, or `manage.py rundemordp`). Not a real device.

It is FreeRDP's shadow server (`freerdp-shadow-cli`) sharing a private
`Xvfb` display of its own — never the host's desktop: the display is
started here with its own MIT cookie, and the shadow server is given that
display alone. On it: a solid background and an xterm running this file's
`panel()`, a small clearly-labelled packaging-line HMI with a handful of
commands and no way to a shell. The shadow server listens on loopback only
and checks NLA logins against an NTLM SAM file written with winpr-hash for
the demo credential, which lives in Airlock's vault (`demo_hmi_login()`):
the demo device and the broker agree without the password being written
down anywhere but that short-lived 0600 file.

The TLS certificate is made here once (var/demo/hmi), so `seed_demo` pins
its SHA-256 on the device record at seed time, as an administrator would
with `manage.py pinrdpcert`.

The desktop part (`start_desktop`) is also the RDP device of the browser
RDP tests (tests/support/rdpserver.py). This module imports nothing from Django at
the top: the xterm runs it as a plain script (`python -I demordp.py panel`).

Debian packages: DEMO_PACKAGES (the README's optional demo step).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_HMI_SLUG = "demo-hmi"
DEMO_RDP_HOST = "127.0.0.1"
DEMO_RDP_PORT = 3390
DEMO_RDP_USERNAME = "operator"
DEMO_BACKGROUND = (0x1F, 0x4E, 0x79)
CHILD_PATH = "/usr/bin:/bin"
# The program each Debian package gives the demo device.
DEMO_PROGRAMS = {
    "Xvfb": "xvfb",
    "xsetroot": "x11-xserver-utils",
    "xterm": "xterm",
    "xdotool": "xdotool",
    "freerdp-shadow-cli": "freerdp2-shadow-x11",
    "winpr-hash": "winpr-utils",
}
DEMO_PACKAGES = tuple(dict.fromkeys(DEMO_PROGRAMS.values()))
PANEL_TITLE = "AIRLOCK DEMO HMI (simulated, not a real device)"


def missing_demo_packages() -> list[str]:
    """The Debian packages the demo device still needs on this host."""
    return [
        pkg
        for program, pkg in DEMO_PROGRAMS.items()
        if shutil.which(program, path=CHILD_PATH) is None
    ]


# --- the desktop ------------------------------------------------------------------------


@dataclass
class RDPDevice:
    """A running shadow server on its private display."""

    port: int
    display: str
    dir: Path
    fingerprint: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    # Files of this run removed by stop() (the SAM file); the directory
    # itself only when owns_dir.
    scratch: list[Path] = field(default_factory=list)
    owns_dir: bool = False

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for path in self.scratch:
            path.unlink(missing_ok=True)
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def write_certificate(home: Path) -> str:
    """The shadow server's TLS certificate and key where it looks for them
    (`$HOME/.config/freerdp/shadow/shadow.{crt,key}`), made once; returns
    the certificate's SHA-256 (colon-separated lower-case hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    where = home / ".config" / "freerdp" / "shadow"
    crt, key_path = where / "shadow.crt", where / "shadow.key"
    if not (crt.exists() and key_path.exists()):
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock-demo-hmi")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    der = x509.load_pem_x509_certificate(crt.read_bytes()).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def _wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the RDP server exited during start-up (is the port free?)")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the RDP server did not start listening")


def start_desktop(
    *,
    port: int,
    home: Path,
    program: list[str],
    username: str,
    password: str,
    security: str = "nla",
    host: str = "127.0.0.1",
    size: str = "1024x768",
    background: tuple[int, int, int] = DEMO_BACKGROUND,
    geometry: str = "60x8+60+60",
    title: str = "",
) -> RDPDevice:
    """Xvfb (its own cookie) + a solid background + an xterm running
    `program`, shared by freerdp-shadow-cli on host:port. With NLA the
    login is checked against a SAM file for username/password; with TLS
    the shadow server checks it with PAM once connected. Sync; raises
    RuntimeError when something does not start (nothing is left running)."""
    from sessions.doors.rdp.desktop import xauthority

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Where X clients with this HOME look by default.
    xauth = home / ".Xauthority"
    fd = os.open(xauth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(xauthority(secrets.token_bytes(16)))
    env = {"PATH": CHILD_PATH, "HOME": str(home), "LANG": "C.UTF-8", "XAUTHORITY": str(xauth)}
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_fd),
            "-auth",
            str(xauth),
            "-screen",
            "0",
            f"{size}x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        pass_fds=(write_fd,),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        number = fh.readline().decode().strip()
    device = RDPDevice(port=port, display=f":{number}", dir=home, procs=[xvfb], scratch=[xauth])
    try:
        if not number.isdigit():
            raise RuntimeError("the virtual display did not start")
        env["DISPLAY"] = device.display
        subprocess.run(
            ["xsetroot", "-solid", "#{:02x}{:02x}{:02x}".format(*background)],
            env=env,
            check=True,
            timeout=10,
        )
        device.procs.append(
            subprocess.Popen(
                ["xterm", "-geometry", geometry]
                + (["-T", title] if title else [])
                + ["-e", *program],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        # Keyboard focus on the xterm itself (no window manager: the default
        # focus follows the pointer, which the RDP server moves around).
        for _ in range(50):
            focused = subprocess.run(
                ["xdotool", "search", "--sync", "--onlyvisible", "--class", "xterm", "windowfocus"],
                env=env,
                timeout=20,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if focused.returncode == 0:
                break
            time.sleep(0.1)
        sam = []
        if security == "nla":
            line = subprocess.run(
                ["winpr-hash", "-u", username, "-p", password, "-f", "sam"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
                env=env,
            ).stdout
            sam_path = home / "sam"
            fd = os.open(sam_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(line)
            device.scratch.append(sam_path)
            sam = [f"/sam-file:{sam_path}"]
        shadow = subprocess.Popen(
            [
                "freerdp-shadow-cli",
                f"/port:{port}",
                f"/bind-address:{host}",
                f"/sec:{security}",
                *sam,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        device.procs.append(shadow)
        _wait_port(host, port, shadow)
        from sessions.doors.rdp.desktop import fetch_certificate_fingerprint

        device.fingerprint = fetch_certificate_fingerprint(host, port)
    except BaseException:
        device.stop()
        raise
    return device


# --- the demo device (Django side) ---------------------------------------------------------


def demo_home() -> Path:
    from django.conf import settings

    return Path(settings.VAR_DIR) / "demo" / "hmi"


def panel_log_path(home: Path | None = None) -> Path:
    return (home or demo_home()) / "panel.log"


def demo_hmi_login() -> tuple[str, str]:
    """(username, password) of the demo HMI, from the vault."""
    from broker import vault
    from broker.models import Credential, Protocol

    credential = Credential.objects.get(device__slug=DEMO_HMI_SLUG, protocol=Protocol.RDP)
    return credential.username, vault.open_secret(credential)


def start_demo_hmi(host: str = DEMO_RDP_HOST, port: int = DEMO_RDP_PORT) -> RDPDevice:
    """Start the demo HMI (sync; after seed_demo). Raises RuntimeError with
    the packages to install when some are missing."""
    missing = missing_demo_packages()
    if missing:
        raise RuntimeError(
            "the demo RDP device needs Debian packages that are not installed: "
            f"apt-get install {' '.join(missing)}"
        )
    username, password = demo_hmi_login()
    home = demo_home()
    write_certificate(home)
    panel = [
        sys.executable,
        "-I",
        str(Path(__file__).resolve()),
        "panel",
        str(panel_log_path(home)),
    ]
    return start_desktop(
        port=port,
        home=home,
        program=panel,
        username=username,
        password=password,
        host=host,
        geometry="78x22+40+40",
        title=PANEL_TITLE,
    )


def seed_hmi(vendor_user: Any) -> dict[str, Any]:
    """demo-hmi in the demo zone: RDP on the demo port (NLA, as the shadow
    server offers), its certificate pinned, a vaulted RDP credential, the
    demo vendor eligible and holding an approved rdp grant. Idempotent."""
    from django.conf import settings
    from django.urls import reverse

    from broker import audit
    from broker.models import Credential, Device, Protocol
    from sessions.demo.inventory import DEMO_DEVICE_SLUG
    from sessions.demo.seed import demo_grant

    zone = Device.objects.get(slug=DEMO_DEVICE_SLUG).zone
    device, _ = Device.objects.get_or_create(
        slug=DEMO_HMI_SLUG,
        defaults={
            "name": "Demo HMI (simulated)",
            "kind": Device.Kind.HMI,
            "zone": zone,
            "ssh_host": "",
            "rdp_host": DEMO_RDP_HOST,
            "rdp_port": DEMO_RDP_PORT,
            "rdp_security": Device.RDPSecurity.NLA,
        },
    )
    fingerprint = write_certificate(demo_home())
    if device.rdp_certificate_sha256 != fingerprint:
        previous = device.rdp_certificate_sha256
        Device.objects.filter(pk=device.pk).update(rdp_certificate_sha256=fingerprint)
        audit.record(
            "device.rdp_certificate_pinned",
            actor="seed_demo",
            target=f"device {device.slug}",
            data={"fingerprint": fingerprint, "previous": previous},
        )
    if not Credential.objects.filter(device=device, protocol=Protocol.RDP).exists():
        credential = Credential(
            device=device,
            protocol=Protocol.RDP,
            username=DEMO_RDP_USERNAME,
            kind=Credential.Kind.PASSWORD,
        )
        credential.set_secret(secrets.token_urlsafe(18))
        credential.save()
    vendor_user.vendor.eligible_devices.add(device)
    grant = demo_grant(
        vendor_user, device, protocols=["rdp"], reason="Demo: try Airlock's browser remote desktop"
    )
    return {
        "slug": device.slug,
        "code": str(device.code),
        "kind": device.get_kind_display(),
        "rdp": f"{device.rdp_host}:{device.rdp_port}",
        "certificate_sha256": fingerprint,
        "grant": {"code": str(grant.code), "ends_at": grant.ends_at.isoformat()},
        "url": settings.PORTAL_URL + reverse("remote-desktop", args=[grant.code]),
        "missing_packages": missing_demo_packages(),
    }


# --- the panel the xterm shows (a plain script: no Django) ---------------------------------


def panel(log_path: str) -> None:
    """A simulated packaging-line HMI. It answers a few commands and keeps
    an operator log (what an HMI's audit trail would hold); nothing typed
    here is ever run."""
    state = {"running": False, "speed": 60, "count": 0}

    def note(text: str) -> None:
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")

    print(PANEL_TITLE)
    print("Riverside Plant / Packaging line · filler station F1")
    print("Commands: status, start, stop, speed N (10-120 bottles/min), help\n")
    while True:
        try:
            line = input("HMI> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            continue
        if not line:
            continue
        note(f"operator typed: {line[:200]}")
        word, _, arg = line.partition(" ")
        if state["running"]:
            state["count"] += state["speed"] // 6
        if word == "status":
            print(
                f"filler F1: {'RUNNING' if state['running'] else 'STOPPED'}, "
                f"{state['speed']} bottles/min, {state['count']} filled (simulated)"
            )
        elif word in ("start", "stop"):
            state["running"] = word == "start"
            print(f"filler F1 {'started' if state['running'] else 'stopped'} (simulated)")
        elif word == "speed" and arg.isdigit() and 10 <= int(arg) <= 120:
            state["speed"] = int(arg)
            print(f"speed set to {arg} bottles/min (simulated)")
        elif word == "help":
            print("status | start | stop | speed N (10-120)")
        else:
            print("unknown command; type help")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "panel":
    panel(sys.argv[2])
