"""`manage.py rungateway [--listen 127.0.0.1:2222]`: an SSH gateway process.

Production runs one or more of these (behind a TCP load balancer, all with
the same host key and REDIS_URL); the embedded default runs the same gateway
inside `manage.py runbroker`. SIGINT/SIGTERM end live sessions with a reason
and stop.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions.doors.ssh.gateway import host_key_fingerprint, start_server
from sessions.management.commands.runbroker import host_port


class Command(BaseCommand):
    help = "Run the SSH gateway: vendors' ssh/scp/sftp in, vaulted logins to devices out."
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:2222", metavar="HOST:PORT")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            host, port = host_port(options["listen"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            asyncio.run(self.serve(host, port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    async def serve(self, host: str, port: int) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        gateway = await start_server(host, port)
        self.stdout.write(
            f"Airlock SSH gateway on {host}:{gateway.port}, host key {host_key_fingerprint()}",
            ending="\n",
        )
        self.stdout.flush()
        try:
            await stopping.wait()
        finally:
            await gateway.stop("the gateway is shutting down")
