"""`manage.py pinrdpcert DEVICE [--yes]`: fetch the TLS certificate a
device's RDP endpoint presents and show its SHA-256, so an administrator can
compare it with the one on the device (on Windows: the Remote Desktop
certificate in the computer's certificate store) before pinning it — trust
on first use, made explicit.

Without --yes nothing changes. With --yes the fingerprint is pinned and the
change audited; from then on Airlock refuses the device when it presents any
other certificate (and raises a signal).
"""

from __future__ import annotations

import ssl
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker import audit
from broker.models import Device
from sessions.doors.rdp.desktop import fetch_certificate_fingerprint


class Command(BaseCommand):
    help = "Fetch and show a device's RDP certificate fingerprint; pin it with --yes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device", help="the device's slug")
        parser.add_argument("--yes", action="store_true", help="pin the fingerprint shown")

    def handle(self, *args: Any, **options: Any) -> None:
        device = Device.objects.filter(slug=options["device"]).first()
        if device is None:
            raise CommandError(f"no device {options['device']!r}")
        if not device.rdp_host:
            raise CommandError(f"{device.slug} has no RDP endpoint")
        try:
            fingerprint = fetch_certificate_fingerprint(device.rdp_host, device.rdp_port)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise CommandError(f"cannot reach {device.rdp_host}:{device.rdp_port}: {exc}") from None
        self.stdout.write(
            f"{device.slug} at {device.rdp_host}:{device.rdp_port} presents a "
            "certificate with SHA-256:"
        )
        self.stdout.write(f"  {fingerprint}")
        pinned = device.rdp_certificate_sha256.strip()
        if pinned:
            same = pinned.lower() == fingerprint
            self.stdout.write(f"Pinned now: {pinned}" + (" (the same)" if same else " (DIFFERENT)"))
            if same:
                return
        if not options["yes"]:
            self.stdout.write(
                "Compare the fingerprint with the device's own certificate, then run "
                "again with --yes to pin it."
            )
            return
        Device.objects.filter(pk=device.pk).update(rdp_certificate_sha256=fingerprint)
        audit.record(
            "device.rdp_certificate_pinned",
            actor="manage.py pinrdpcert",
            target=f"device {device.slug}",
            data={"fingerprint": fingerprint, "previous": pinned},
        )
        self.stdout.write(self.style.SUCCESS(f"Pinned {fingerprint} for {device.slug}."))
