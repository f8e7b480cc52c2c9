"""`manage.py pinhostkey DEVICE [--yes]`: fetch a device's SSH host key and
show it, so an administrator can compare the fingerprint with the one on the
device's console before pinning it (trust on first use, made explicit).

Without --yes nothing changes. With --yes the key is pinned and the change
is audited; from then on the gateway refuses a device presenting any other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker import audit
from broker.models import Device
from sessions.live.core import client_options


async def fetch_host_key(host: str, port: int) -> asyncssh.SSHKey:
    options = client_options()
    key = await asyncio.wait_for(
        asyncssh.get_server_host_key(host, port, config=None),
        timeout=options["connect_timeout"] + options["login_timeout"],
    )
    if key is None:
        raise CommandError(f"{host}:{port} presented no host key")
    return key


class Command(BaseCommand):
    help = "Fetch and show a device's SSH host key; pin it with --yes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device", help="the device's slug")
        parser.add_argument("--yes", action="store_true", help="pin the key shown")

    def handle(self, *args: Any, **options: Any) -> None:
        device = Device.objects.filter(slug=options["device"]).first()
        if device is None:
            raise CommandError(f"no device {options['device']!r}")
        if not device.ssh_host:
            raise CommandError(f"{device.slug} has no SSH endpoint")
        try:
            key = asyncio.run(fetch_host_key(device.ssh_host, device.ssh_port))
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise CommandError(f"cannot reach {device.ssh_host}:{device.ssh_port}: {exc}") from None
        line = key.export_public_key("openssh").decode().strip()
        fingerprint = key.get_fingerprint("sha256")
        self.stdout.write(f"{device.slug} at {device.ssh_host}:{device.ssh_port} presents:")
        self.stdout.write(f"  {fingerprint}")
        self.stdout.write(f"  {line}")
        pinned = device.ssh_host_key.strip()
        if pinned:
            try:
                old = asyncssh.import_public_key(pinned).get_fingerprint("sha256")
            except (asyncssh.KeyImportError, ValueError):
                old = "unreadable"
            same = old == fingerprint
            self.stdout.write(
                f"Pinned now: {old}" + (" (the same key)" if same else " (DIFFERENT)")
            )
            if same:
                return
        if not options["yes"]:
            self.stdout.write(
                "Compare the fingerprint with the device's own (its console or "
                "documentation), then run again with --yes to pin it."
            )
            return
        Device.objects.filter(pk=device.pk).update(ssh_host_key=line)
        audit.record(
            "device.host_key_pinned",
            actor="manage.py pinhostkey",
            target=f"device {device.slug}",
            data={"fingerprint": fingerprint, "previous": pinned[:200]},
        )
        self.stdout.write(self.style.SUCCESS(f"Pinned {fingerprint} for {device.slug}."))
