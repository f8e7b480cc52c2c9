"""Explicit scoping: vendors see their own org's objects, approvers their
zones', auditors everything (read-only). Anything else is a 404 by code."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from broker import approvals
from broker.models import AccessRequest, Device, Grant
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both


@pytest.fixture
def other(plant, make_vendor_user, make_zone, make_device, make_group, make_approver, make_grant):
    """Another vendor, in another zone, with a request and a grant."""
    util = make_group("Utilities")
    zone = make_zone(name="Utilities", rules=[(util, 1)])
    device = make_device("pump-1", zone=zone)
    mallory = make_vendor_user("mallory")
    mallory.vendor.eligible_devices.add(device)
    req = approvals.submit_request(
        mallory,
        device,
        protocols=["ssh"],
        starts_at=None,
        duration=timedelta(hours=1),
        reason="WO-9",
    )
    grant = make_grant(mallory, device)
    ivan = make_approver("ivan", groups=[util])
    return type(
        "Other", (), dict(device=device, user=mallory, request=req, grant=grant, approver=ivan)
    )


def reads(o) -> list[str]:
    return [
        reverse("request-detail", args=[o.request.code]),
        reverse("grant-detail", args=[o.grant.code]),
    ]


def acts(o) -> dict[str, str]:
    """POST endpoints by the role they are for."""
    return {
        reverse("request-cancel", args=[o.request.code]): "vendor",
        reverse("grant-end", args=[o.grant.code]): "vendor",
        reverse("request-new", args=[o.device.code]): "vendor",
        reverse("request-decide", args=[o.request.code]): "approver",
        reverse("grant-revoke", args=[o.grant.code]): "approver",
    }


def assert_nothing_changed(o) -> None:
    o.request.refresh_from_db()
    o.grant.refresh_from_db()
    assert o.request.status == AccessRequest.Status.PENDING and not o.request.approvals.exists()
    assert o.grant.revoked_at is None


def test_a_vendor_sees_only_their_own_orgs_objects(plant, other, make_grant):
    mine = make_grant(plant.vera, plant.device)
    assert list(Device.objects.visible_to(plant.vera)) == [plant.device]
    assert list(Grant.objects.visible_to(plant.vera)) == [mine]
    assert not AccessRequest.objects.visible_to(plant.vera).filter(pk=other.request.pk).exists()


def test_an_approver_sees_only_their_zones(plant, other):
    assert list(Device.objects.visible_to(plant.olga)) == [plant.device]
    assert not Grant.objects.visible_to(plant.olga).filter(pk=other.grant.pk).exists()
    assert list(AccessRequest.objects.visible_to(other.approver)) == [other.request]


def test_an_auditor_sees_everything(plant, other, make_user):
    auditor = make_user("ada", is_auditor=True)
    assert Device.objects.visible_to(auditor).count() == 2
    assert AccessRequest.objects.visible_to(auditor).count() == 1


def test_an_inactive_device_is_not_visible_to_vendors(plant):
    plant.device.is_active = False
    plant.device.save()
    assert not Device.objects.visible_to(plant.vera).exists()
    assert Device.objects.visible_to(plant.olga).exists()


def test_a_vendor_gets_404_for_another_vendors_request_grant_and_device(
    plant, other, verified_client
):
    client = verified_client(plant.vera)
    for url in reads(other):
        assert client.get(url).status_code == 404, url
    for url, role in acts(other).items():
        # Pages of another role are refused outright (403); the vendor's own
        # pages cannot find the other vendor's object (404).
        assert client.post(url, {"reason": "x"}).status_code == (
            404 if role == "vendor" else 403
        ), url
    assert_nothing_changed(other)


def test_an_approver_gets_404_for_another_zones_request_grant_and_device(
    plant, other, verified_client
):
    client = verified_client(plant.olga)
    for url in reads(other):
        assert client.get(url).status_code == 404, url
    for url, role in acts(other).items():
        data = {"decision": "approve", "reason": "x"}
        assert client.post(url, data).status_code == (404 if role == "approver" else 403), url
    assert client.get(reverse("request-decide", args=[other.request.code])).status_code == 404
    assert_nothing_changed(other)


def test_an_auditor_reads_everything_but_cannot_act(plant, other, verified_client, make_user):
    client = verified_client(make_user("ada", is_auditor=True))
    for url in reads(other):
        assert client.get(url).status_code == 200, url
    for url in acts(other):
        assert client.post(url, {"decision": "approve", "reason": "x"}).status_code == 403, url
    assert_nothing_changed(other)


def test_asking_for_a_device_of_another_vendor_is_audited(plant, other, verified_client):
    from broker.models import AuditEvent

    client = verified_client(plant.vera)
    assert client.post(reverse("request-new", args=[other.device.code])).status_code == 404
    assert AuditEvent.objects.filter(
        action="request.refused", actor="vera", target=f"device:{other.device.code}"
    ).exists()
    assert not AccessRequest.objects.filter(user=plant.vera).exists()


def test_probing_another_vendors_codes_is_audited(plant, other, verified_client):
    from broker.models import AuditEvent

    client = verified_client(plant.vera)
    client.get(reverse("request-detail", args=[other.request.code]))
    client.get(reverse("grant-detail", args=[other.grant.code]))
    probes = AuditEvent.objects.filter(action="access.not_visible", actor="vera")
    assert {e.target for e in probes} == {
        f"request:{other.request.code}",
        f"grant:{other.grant.code}",
    }


def test_a_code_that_does_not_exist_is_a_plain_404(plant, verified_client):
    import uuid

    from broker.models import AuditEvent

    client = verified_client(plant.vera)
    assert client.get(reverse("grant-detail", args=[uuid.uuid4()])).status_code == 404
    assert not AuditEvent.objects.filter(action="access.not_visible").exists()
