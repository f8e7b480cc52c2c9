"""`manage.py rundemordp [--listen 127.0.0.1:3390]`: the demo's simulated
HMI remote desktop (sessions/demo/rdp.py), after `seed_demo`. Not a real
device and never the host's desktop: a private virtual display with a small
HMI panel, shared by FreeRDP's shadow server on loopback."""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions.demo import rdp as demordp
from sessions.management.commands.runbroker import host_port


class Command(BaseCommand):
    help = (
        "Run the demo's simulated HMI remote desktop (FreeRDP shadow server on a private display)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--listen",
            default=f"{demordp.DEMO_RDP_HOST}:{demordp.DEMO_RDP_PORT}",
            metavar="HOST:PORT",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            host, port = host_port(options["listen"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            device = demordp.start_demo_hmi(host, port)
        except ObjectDoesNotExist:
            raise CommandError("no demo HMI yet: run `manage.py seed_demo` first") from None
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise CommandError(f"the demo HMI could not start: {exc}") from None
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        self.stdout.write(
            f"Airlock DEMO HMI (simulated) on {host}:{port}, certificate "
            f"sha256 {device.fingerprint}; stop with Ctrl-C"
        )
        try:
            while not stopping.wait(1):
                if any(proc.poll() is not None for proc in device.procs):
                    raise CommandError("the demo HMI stopped unexpectedly")
        finally:
            device.stop()
