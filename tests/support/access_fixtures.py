"""A small plant for the access-model tests: one zone whose policy needs
1 of "Plant operations" AND 1 of "OT security", one device, one vendor
eligible for it, and an approver in each group. Import the fixture
(`from tests.support.access_fixtures import plant`) where needed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from broker.models import ApproverGroup, Device, User, Vendor, Zone


@dataclass
class Plant:
    zone: Zone
    device: Device
    vendor: Vendor
    vera: User  # vendor user
    olga: User  # approver, Plant operations
    sam: User  # approver, OT security
    ops: ApproverGroup
    sec: ApproverGroup


@pytest.fixture
def plant(make_group, make_zone, make_device, make_vendor_user, make_approver) -> Plant:
    ops, sec = make_group("Plant operations"), make_group("OT security")
    zone = make_zone(
        name="Packaging line",
        slug="packaging",
        rules=[(ops, 1), (sec, 1)],
        max_window=timedelta(hours=8),
    )
    device = make_device("plc-7", zone=zone)
    vera = make_vendor_user("vera", email="vera@vendor.test")
    vera.vendor.eligible_devices.add(device)
    olga = make_approver("olga", groups=[ops], email="olga@plant.test")
    sam = make_approver("sam", groups=[sec], email="sam@plant.test")
    return Plant(zone, device, vera.vendor, vera, olga, sam, ops, sec)
