"""`manage.py rundemodevice [--listen 127.0.0.1:2201]`: the simulated PLC
of the demo (sessions/demo/device.py). Not a real device, never a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions.demo import device as demodevice
from sessions.management.commands.runbroker import host_port


class Command(BaseCommand):
    help = (
        "Run the demo's simulated PLC (SSH with a small command set and SFTP on a scratch folder)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:2201", metavar="HOST:PORT")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            host, port = host_port(options["listen"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            demodevice.run_forever(host, port)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except Exception as exc:
            if exc.__class__.__name__ == "DoesNotExist":
                raise CommandError("no demo device yet: run `manage.py seed_demo` first") from None
            raise
