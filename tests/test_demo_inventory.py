"""The demo plant: a zone needing two groups, the demo PLC with a vaulted
credential, the demo vendor eligible for it — idempotent."""

from __future__ import annotations

import pytest

from broker.access import authorize  # noqa: F401  (the demo device is reached through it)
from broker.models import ApprovalRule, Credential, Device, Site, Zone
from sessions.demo import inventory as demo

pytestmark = pytest.mark.both


def test_seed_inventory_builds_the_demo_plant_and_is_idempotent(make_vendor):
    vendor = make_vendor("Acme Automation")
    first = demo.seed_inventory(vendor)
    username, password = demo.demo_device_login()
    second = demo.seed_inventory(vendor)
    assert first == second
    assert demo.demo_device_login() == (username, password) and len(password) >= 20
    assert (
        Site.objects.get().timezone == "Europe/Berlin"
        and Zone.objects.get().name == "Packaging line"
    )
    assert sorted(str(r) for r in ApprovalRule.objects.all()) == [
        "1 of OT security",
        "1 of Plant operations",
    ]
    device = Device.objects.get(slug="demo-plc")
    assert (device.kind, device.ssh_host, device.ssh_port) == ("plc", "127.0.0.1", 2201)
    assert list(vendor.eligible_devices.all()) == [device]
    assert Credential.objects.count() == 1
    assert password not in str(first)
