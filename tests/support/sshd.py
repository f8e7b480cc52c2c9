"""Real parts for the gateway tests: Debian's OpenSSH server as the device,
the gateway in this process, and the OpenSSH client as the vendor.

Import the fixtures you need into a test module explicitly:

    from tests.support.sshd import device_sshd, gateway, vendor  # noqa: F401  (fixtures)

The device is `/usr/sbin/sshd -D -f <config>` on a free port with its own host
key, a PID file and a log file in a temporary folder. It logs in a dedicated
local account (DEVICE_USER, created with useradd when missing) by password.
`device_sshd.logins()` reads the log, so a test can assert that a denied
vendor caused no login on the device.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker import vault
from broker.models import Credential, Device, Grant, SSHPublicKey, User
from tests.conftest import free_port, stop_thread_loop

SSHD = "/usr/sbin/sshd"
DEVICE_USER = "airlockdev"
# A fresh password each run, never one written in the repository, and the
# account's password is made unusable again when the run ends
# (lock_device_user, called by pytest_sessionfinish): a networked host keeps
# no account with a known password after `make test`.
DEVICE_PASSWORD = secrets.token_urlsafe(24)


def _need(cond: bool, why: str) -> None:
    if not cond:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)


def ensure_device_user() -> None:
    """A local account for the device side (needs root; tests run as root here)."""
    if subprocess.run(["id", DEVICE_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", DEVICE_USER], check=True)
    else:  # a previous run left it with nologin and no password
        subprocess.run(["usermod", "-s", "/bin/bash", DEVICE_USER], check=True)
    subprocess.run(["chpasswd"], input=f"{DEVICE_USER}:{DEVICE_PASSWORD}\n", text=True, check=True)
    _ACCOUNT_TOUCHED.append(DEVICE_USER)


_ACCOUNT_TOUCHED: list[str] = []


def lock_device_user() -> None:
    """Make the device account's password unusable ('*' matches no password)
    and its shell nologin, if this run set its password."""
    if not _ACCOUNT_TOUCHED:
        return
    subprocess.run(["usermod", "-p", "*", "-s", "/usr/sbin/nologin", DEVICE_USER], check=True)
    _ACCOUNT_TOUCHED.clear()


def keygen(path: Path, kind: str = "ed25519") -> tuple[Path, str]:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path, (path.parent / (path.name + ".pub")).read_text().strip()


@dataclass
class SSHDevice:
    """A running sshd acting as a device."""

    root: Path
    port: int
    host_key_line: str
    log_path: Path
    home: Path
    proc: subprocess.Popen | None = None
    authorized_keys: Path = field(default=Path())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logins(self) -> list[str]:
        return [line for line in self.log().splitlines() if "Accepted " in line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(root: Path, *, extra_config: str = "") -> SSHDevice:
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    host_key, host_pub = keygen(root / "ssh_host_ed25519_key")
    authorized = root / "authorized_keys"
    authorized.touch()
    port = free_port()
    log_path = root / "sshd.log"
    config = root / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {authorized}
StrictModes no
AllowUsers {DEVICE_USER}
PermitRootLogin no
AllowTcpForwarding yes
X11Forwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
MaxStartups 200:30:400
MaxSessions 50
Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr
{extra_config}
""")
    proc = subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-E", str(log_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    device = SSHDevice(
        root=root,
        port=port,
        host_key_line=host_pub,
        log_path=log_path,
        home=Path(f"/home/{DEVICE_USER}"),
        proc=proc,
        authorized_keys=authorized,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {device.log()}")
        if "Server listening" in device.log():
            return device
        time.sleep(0.05)
    device.stop()
    raise RuntimeError(f"sshd did not start: {device.log()}")


@pytest.fixture(scope="session")
def device_sshd() -> Iterator[SSHDevice]:
    _need(os.path.exists(SSHD), "this test needs Debian's openssh-server (/usr/sbin/sshd)")
    _need(os.geteuid() == 0, "the sshd device fixture creates a local account and needs root")
    ensure_device_user()
    root = Path(tempfile.mkdtemp(prefix="airlock-sshd-"))
    device = start_sshd(root)
    yield device
    device.stop()
    shutil.rmtree(root, ignore_errors=True)


# --- the gateway, in this process ---------------------------------------------


class GatewayThread:
    """The gateway's event loop in a thread of the test process, so it shares
    the test database (the tests use transaction=True)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gateway: Any = None
        self.port = 0

    def start(self) -> GatewayThread:
        from sessions.doors.ssh.gateway import start_server

        self.thread.start()
        self.gateway = self.call(start_server("127.0.0.1", 0))
        self.port = self.gateway.port
        return self

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def dump_tasks(self) -> None:
        """What the gateway's loop is waiting on (printed when stop hangs)."""
        import faulthandler
        import io
        import sys

        try:
            tasks = list(asyncio.all_tasks(self.loop))
        except RuntimeError:  # the loop changed its task set meanwhile
            tasks = []
        for task in tasks:
            out = io.StringIO()
            task.print_stack(file=out)
            print(f"--- pending: {task!r}\n{out.getvalue()}", file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr)

    def close_server(self, server: Any) -> None:
        """Close a listener that lives on this loop, from the loop itself
        (asyncio servers are not thread-safe: closing one from the test's
        thread races the loop's own wake-up of its waiters)."""

        async def close() -> None:
            server.close()

        self.call(close(), timeout=30)

    def live_sessions(self) -> list[Any]:
        return list(self.gateway.sessions)

    def stop(self) -> None:
        try:
            self.call(self.gateway.stop(), timeout=30)
        except TimeoutError:
            self.dump_tasks()
            raise
        finally:
            stop_thread_loop(self.loop, self.thread)


@pytest.fixture
def gateway(transactional_db: Any, settings: Any) -> Iterator[GatewayThread]:
    settings.GATEWAY_LOGIN_GRACE = 20
    settings.GATEWAY_DEVICE_CONNECT_TIMEOUT = 5
    settings.GATEWAY_DEVICE_LOGIN_TIMEOUT = 5
    thread = GatewayThread().start()
    yield thread
    thread.stop()


# --- the vendor ------------------------------------------------------------------


@dataclass
class Vendor:
    """A vendor user with a registered key, an approved grant on a device
    that is the sshd above, and helpers to run the real OpenSSH clients."""

    user: User
    device: Device
    grant: Grant
    key: Path
    known_hosts: Path
    gateway_port: int
    tmp: Path

    @property
    def login(self) -> str:
        return f"{self.user.username}+{self.device.slug}"

    def ssh_options(self, batch: bool = True) -> list[str]:
        opts = [
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "PasswordAuthentication=no",
        ]
        if batch:
            opts += ["-o", "BatchMode=yes"]
        return opts

    def ssh(
        self,
        *command: str,
        extra: list[str] = (),
        input: bytes | None = None,
        timeout: float = 60,
        batch: bool = True,
    ) -> subprocess.CompletedProcess:
        args = [
            "ssh",
            *self.ssh_options(batch),
            "-p",
            str(self.gateway_port),
            *extra,
            f"{self.login}@127.0.0.1",
            *command,
        ]
        return subprocess.run(args, input=input, capture_output=True, timeout=timeout)

    def ssh_args(self, *command: str, extra: list[str] = (), batch: bool = True) -> list[str]:
        return [
            "ssh",
            *self.ssh_options(batch),
            "-p",
            str(self.gateway_port),
            *extra,
            f"{self.login}@127.0.0.1",
            *command,
        ]

    def scp(
        self, *args: str, legacy: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        cmd = ["scp", *self.ssh_options(), "-P", str(self.gateway_port)] + (
            ["-v"] if os.environ.get("AIRLOCK_TEST_SCP_VERBOSE") else []
        )
        if legacy:
            cmd.append("-O")
        return subprocess.run([*cmd, *args], capture_output=True, timeout=timeout)

    def sftp(self, batch_text: str, timeout: float = 60) -> subprocess.CompletedProcess:
        batch = self.tmp / "sftp-batch"
        batch.write_text(batch_text)
        cmd = [
            "sftp",
            *self.ssh_options(),
            "-P",
            str(self.gateway_port),
            "-b",
            str(batch),
            f"{self.login}@127.0.0.1",
        ]
        return subprocess.run(cmd, capture_output=True, timeout=timeout)

    def remote(self, path: str) -> str:
        return f"{self.login}@127.0.0.1:{path}"


def pin_device(device: Device, sshd: SSHDevice, *, password: str = DEVICE_PASSWORD) -> None:
    device.ssh_host = "127.0.0.1"
    device.ssh_port = sshd.port
    device.ssh_host_key = sshd.host_key_line
    device.save()
    kid, blob = vault.seal(password)
    Credential.objects.update_or_create(
        device=device,
        protocol="ssh",
        defaults={
            "username": DEVICE_USER,
            "kind": Credential.Kind.PASSWORD,
            "key_id": kid,
            "ciphertext": blob,
        },
    )


@pytest.fixture
def make_ssh_vendor(
    device_sshd: SSHDevice,
    gateway: GatewayThread,
    make_vendor_user: Callable,
    make_device: Callable,
    make_grant: Callable,
    tmp_path: Path,
) -> Callable[..., Vendor]:
    from sessions.doors.ssh.gateway import host_key_line

    counter = iter(range(1, 1000))

    def make(
        *,
        grant: dict | None = None,
        device: Device | None = None,
        user: User | None = None,
        **device_kw: Any,
    ) -> Vendor:
        n = next(counter)
        user = user or make_vendor_user(f"vendor{n}")
        device = device or make_device(f"plc-{n}", **device_kw)
        pin_device(device, device_sshd)
        g = make_grant(user, device, **(grant or {}))
        key, pub = keygen(tmp_path / f"vendor{n}_ed25519")
        from broker import sshkeys

        parsed = sshkeys.parse(pub)
        SSHPublicKey.objects.create(
            user=user,
            public_key=parsed.openssh,
            algorithm=parsed.algorithm,
            bits=parsed.bits,
            fingerprint=parsed.fingerprint,
            name="test",
        )
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{gateway.port} {host_key_line()}\n")
        return Vendor(
            user=user,
            device=device,
            grant=g,
            key=key,
            known_hosts=known,
            gateway_port=gateway.port,
            tmp=tmp_path,
        )

    return make


@pytest.fixture
def vendor(make_ssh_vendor: Callable[..., Vendor]) -> Vendor:
    return make_ssh_vendor()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the hang guard expired")
        time.sleep(interval)


def ended_sessions(user: User) -> list[Any]:
    from sessions.models import Session

    return list(Session.objects.filter(user=user).exclude(ended_at=None))


__all__ = ["device_sshd", "gateway", "make_ssh_vendor", "vendor", "wait_for"]
