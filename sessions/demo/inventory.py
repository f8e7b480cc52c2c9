"""Demo inventory for `manage.py seed_demo`: a plant a newcomer can walk
request → quorum approval → grant in, clearly labelled as a demo.

Site "Riverside Plant" (Europe/Berlin) with zone "Packaging line", whose
policy needs 1 of "Plant operations" AND 1 of "OT security"; the simulated
PLC `demo-plc` (`manage.py rundemodevice`, SSH on 127.0.0.1:2201) with a
vaulted SSH password; the demo vendor eligible for it.

Idempotent: running it again changes nothing, and the device password is
generated once (randomly) and kept in the vault, where the simulated
device reads it too (`demo_device_login()`), so it is never written down.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction

from broker import vault
from broker.models import (
    ApprovalRule,
    ApproverGroup,
    Credential,
    Device,
    Protocol,
    Site,
    Vendor,
    Zone,
)

DEMO_DEVICE_SLUG = "demo-plc"
DEMO_DEVICE_HOST = "127.0.0.1"
DEMO_DEVICE_PORT = 2201
DEMO_DEVICE_USERNAME = "maint"
GROUP_OPERATIONS = "Plant operations"
GROUP_SECURITY = "OT security"


@transaction.atomic
def seed_inventory(vendor: Vendor) -> dict[str, Any]:
    """Create (or find) the demo site, zone, policy, device and credential,
    and make `vendor` eligible for the device. Returns facts for the demo's
    printed and JSON output (never the device password)."""
    site, _ = Site.objects.get_or_create(
        slug="riverside", defaults={"name": "Riverside Plant", "timezone": "Europe/Berlin"}
    )
    zone, _ = Zone.objects.get_or_create(
        site=site,
        slug="packaging-line",
        defaults={"name": "Packaging line", "max_window": timedelta(hours=8)},
    )
    groups = {}
    for name in (GROUP_OPERATIONS, GROUP_SECURITY):
        groups[name], _ = ApproverGroup.objects.get_or_create(name=name)
        ApprovalRule.objects.get_or_create(zone=zone, group=groups[name], defaults={"count": 1})
    device, _ = Device.objects.get_or_create(
        slug=DEMO_DEVICE_SLUG,
        defaults={
            "name": "Demo PLC (simulated)",
            "kind": Device.Kind.PLC,
            "zone": zone,
            "ssh_host": DEMO_DEVICE_HOST,
            "ssh_port": DEMO_DEVICE_PORT,
        },
    )
    credential = Credential.objects.filter(device=device, protocol=Protocol.SSH).first()
    if credential is None:
        credential = Credential(
            device=device,
            protocol=Protocol.SSH,
            username=DEMO_DEVICE_USERNAME,
            kind=Credential.Kind.PASSWORD,
        )
        credential.set_secret(secrets.token_urlsafe(18))
        credential.save()
    vendor.eligible_devices.add(device)
    return {
        "site": site.name,
        "zone": zone.name,
        "timezone": site.timezone,
        "policy": " AND ".join(str(r) for r in zone.approval_rules.all()),
        "approver_groups": [GROUP_OPERATIONS, GROUP_SECURITY],
        "device": {
            "slug": device.slug,
            "code": str(device.code),
            "kind": device.get_kind_display(),
            "ssh": f"{device.ssh_host}:{device.ssh_port}",
        },
    }


def demo_device_login() -> tuple[str, str]:
    """(username, password) the simulated device accepts: read from the
    vault, so the demo device and the gateway agree without a file."""
    credential = Credential.objects.select_related("device").get(
        device__slug=DEMO_DEVICE_SLUG, protocol=Protocol.SSH
    )
    return credential.username, vault.open_secret(credential)
