"""A simulated PLC for the demo (`manage.py rundemodevice`): clearly labelled,
never a shell on the host.

An asyncssh server on 127.0.0.1:2201 that accepts only the demo device's
vaulted login (sessions.demo.inventory.demo_device_login) and offers a small PLC-style
command set — status, read/write of 16 holding registers, an event log —
plus SFTP (and scp) confined to a scratch folder under var/demo/. Every
command is interpreted here; nothing is ever passed to a system shell.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
from channels.db import database_sync_to_async
from django.conf import settings

from sessions.demo.inventory import demo_device_login
from sessions.doors.ssh.gateway import private_key_file

log = logging.getLogger("airlock.demodevice")

BANNER = (
    "*** Airlock DEMO PLC: a simulated device for trying Airlock. "
    "Not a real controller, not a shell. ***"
)
HELP = """Commands:
  status                  controller state, uptime and firmware
  read <register>         read a holding register (0-15)
  write <register> <val>  write a holding register (0-65535)
  logs                    the controller's event log
  help                    this text
  exit                    end the session
"""
REGISTERS = 16
MAX_LINE = 1024


def demo_root() -> Path:
    return Path(settings.VAR_DIR) / "demo"


def files_dir() -> Path:
    return demo_root() / "device-files"


def host_key_path() -> Path:
    return demo_root() / "demo_device_host_key"


def host_key() -> asyncssh.SSHKey:
    """The simulated device's host key, generated once (0600); seed_demo pins it."""
    return private_key_file(host_key_path(), "airlock-demo-plc")


def host_key_line() -> str:
    return host_key().export_public_key("openssh").decode().strip()


class PLC:
    """The simulated controller's state, shared by every session."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.registers = [0] * REGISTERS
        self.registers[0] = 1200  # line speed, bottles per hour
        self.registers[1] = 72  # oven temperature, °C
        self.events: list[str] = []
        self.log("controller started (simulated)")

    def log(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self.events.append(f"{stamp}  {text}")
        del self.events[:-200]

    def run(self, line: str, who: str) -> str:
        words = line.split()
        if not words:
            return ""
        command, args = words[0].lower(), words[1:]
        if command == "help":
            return HELP
        if command == "status":
            up = int(time.monotonic() - self.started)
            return (
                f"demo-plc (SIMULATED)  state: RUN  uptime: {up // 3600}h{up % 3600 // 60:02d}m"
                f"{up % 60:02d}s  firmware: 4.2.1-demo  registers: {REGISTERS}\n"
            )
        if command == "read":
            reg = self._register(args[:1])
            if reg is None:
                return "usage: read <register 0-15>\n"
            return f"R{reg} = {self.registers[reg]}\n"
        if command == "write":
            reg = self._register(args[:1])
            if reg is None or len(args) != 2 or not args[1].isdigit() or int(args[1]) > 65535:
                return "usage: write <register 0-15> <value 0-65535>\n"
            old, self.registers[reg] = self.registers[reg], int(args[1])
            self.log(f"{who}: R{reg} {old} -> {self.registers[reg]}")
            return f"R{reg} = {self.registers[reg]} (was {old})\n"
        if command == "logs":
            return "\n".join(self.events) + "\n"
        return f"unknown command {command!r}; type help\n"

    @staticmethod
    def _register(args: list[str]) -> int | None:
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) >= REGISTERS:
            return None
        return int(args[0])


# How long a stop waits for the listener to report closed once every
# connection has been aborted; bounded so a stop never hangs on a client.
STOP_SECONDS = 5.0


class DemoServer(asyncssh.SSHServer):
    def __init__(self, login: tuple[str, str], conns: set[asyncssh.SSHServerConnection]) -> None:
        self.login = login
        self.conns = conns

    # Tracked so a stop can abort them: a client that opened TCP and never
    # finished the handshake would otherwise hold wait_closed() until
    # asyncssh's two-minute login timeout.
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        user, secret = self.login
        return hmac.compare_digest(username.encode(), user.encode()) and hmac.compare_digest(
            password.encode(), secret.encode()
        )


async def _session(process: asyncssh.SSHServerProcess, plc: PLC) -> None:
    who = process.get_extra_info("username") or "?"
    try:
        if process.command is not None:
            process.stdout.write(plc.run(process.command[:MAX_LINE], who))
            process.exit(0)
            return
        process.stdout.write(BANNER + "\r\n" + "Type help for the commands.\r\n")
        while True:
            process.stdout.write("demo-plc> ")
            try:
                line = await process.stdin.readline()
            except asyncssh.BreakReceived:
                continue
            except (asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
                continue
            if not line:
                break
            line = line[:MAX_LINE].strip()
            if line.lower() in {"exit", "quit", "logout"}:
                break
            process.stdout.write(plc.run(line, who).replace("\n", "\r\n"))
        process.exit(0)
    except (asyncssh.Error, OSError, BrokenPipeError):
        process.close()


class DemoDevice:
    """The running simulated PLC: close() stops listening and drops every
    client, whatever state it is in; wait_closed() returns within
    STOP_SECONDS."""

    def __init__(
        self, acceptor: asyncssh.SSHAcceptor, conns: set[asyncssh.SSHServerConnection]
    ) -> None:
        self.acceptor = acceptor
        self.conns = conns

    def close(self) -> None:
        self.acceptor.close()
        for conn in list(self.conns):
            conn.abort()
        self.conns.clear()

    async def wait_closed(self) -> None:
        try:
            await asyncio.wait_for(self.acceptor.wait_closed(), timeout=STOP_SECONDS)
        except TimeoutError:
            log.warning("demo device listener still closing after %ss; leaving it", STOP_SECONDS)

    def get_port(self) -> int:
        return self.acceptor.get_port()


async def start_demo_device(host: str = "127.0.0.1", port: int = 2201) -> DemoDevice:
    """Start the simulated PLC in the running loop; close() and
    wait_closed() on the result stop it in bounded time."""
    login = await database_sync_to_async(demo_device_login)()
    files_dir().mkdir(parents=True, exist_ok=True)
    plc = PLC()

    async def handle(process: asyncssh.SSHServerProcess) -> None:
        await _session(process, plc)

    root = str(files_dir()).encode()
    conns: set[asyncssh.SSHServerConnection] = set()
    acceptor = await asyncssh.create_server(
        lambda: DemoServer(login, conns),
        host,
        port,
        server_host_keys=[host_key()],
        process_factory=handle,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
        allow_scp=True,
        encoding="utf-8",
        line_editor=True,
        agent_forwarding=False,
        x11_forwarding=False,
        kbdint_auth=False,
        public_key_auth=False,
        config=None,
    )
    return DemoDevice(acceptor, conns)


def run_forever(host: str, port: int) -> None:
    async def main() -> None:
        server = await start_demo_device(host, port)
        print(
            f"Airlock DEMO PLC (simulated) listening on {host}:{port}; "
            f"SFTP folder {files_dir()}; host key {host_key().get_fingerprint('sha256')}"
        )
        try:
            await asyncio.Event().wait()
        finally:
            server.close()
            await server.wait_closed()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = ["start_demo_device", "host_key_line", "host_key", "files_dir", "PLC"]
