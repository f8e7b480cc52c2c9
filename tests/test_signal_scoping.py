"""Sensors are scoped to zones, a named user is acted on only when they hold
something on the device, batches are accepted record by record, and hostile
JSON is a 400 before any state is spent (issue 12 points 4 and 5)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from broker.models import Lock
from sessions.models import Sensor, Session, Signal, SignalReceipt
from tests.support.signing import create_sensor, post_signal


@pytest.fixture(autouse=True)
def in_memory(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def plant(make_zone: Any, make_device: Any, make_vendor_user: Any, make_grant: Any) -> Any:
    zone_a, zone_b = make_zone(), make_zone()
    a = make_device("plc-a", ssh_host="10.40.1.7", zone=zone_a)
    b = make_device("plc-b", ssh_host="10.50.1.9", zone=zone_b)
    sensor, secret = create_sensor("zeek-a", zones=[zone_a])
    return {"a": a, "b": b, "zone_a": zone_a, "sensor": sensor, "secret": secret}


def generic(device: str, severity: str = "high", **kw: Any) -> str:
    return json.dumps({"device": device, "severity": severity, "kind": "test", **kw})


def test_a_sensor_naming_a_device_outside_its_zones_is_refused_and_nothing_stored(
    client: Any, plant: Any
) -> None:
    response = post_signal(client, "zeek-a", plant["secret"], generic("plc-b"))
    assert response.status_code == 403
    assert not Signal.objects.exists()


def test_a_sensor_with_no_zones_may_report_about_nothing(client: Any, plant: Any) -> None:
    plant["sensor"].zones.clear()
    response = post_signal(client, "zeek-a", plant["secret"], generic("plc-a"))
    assert response.status_code == 403
    assert not Signal.objects.exists()


def test_a_sensor_naming_a_user_without_a_grant_or_session_only_alerts(
    client: Any, plant: Any, make_vendor_user: Any
) -> None:
    mallory = make_vendor_user("bystander")
    response = post_signal(
        client, "zeek-a", plant["secret"], generic("plc-a", "critical", user="bystander")
    )
    assert response.status_code == 202, response.content
    signal = Signal.objects.get()
    assert signal.user == mallory
    assert not Lock.objects.exists()
    assert all(a.startswith("alerted") for a in signal.actions)


def test_a_sensor_naming_a_user_with_a_live_grant_on_the_device_acts(
    client: Any, plant: Any, make_vendor_user: Any, make_grant: Any
) -> None:
    alice = make_vendor_user("alice")
    make_grant(alice, plant["a"], ends_at=timezone.now() + timedelta(hours=2))
    response = post_signal(client, "zeek-a", plant["secret"], generic("plc-a", user="alice"))
    assert response.status_code == 202, response.content
    assert Lock.objects.filter(user=alice).exists()


def test_a_grant_on_another_device_does_not_make_a_named_user_lockable(
    client: Any, plant: Any, make_vendor_user: Any, make_grant: Any
) -> None:
    alice = make_vendor_user("alice")
    make_grant(alice, plant["b"], ends_at=timezone.now() + timedelta(hours=2))
    post_signal(client, "zeek-a", plant["secret"], generic("plc-a", user="alice"))
    assert not Lock.objects.exists()


def test_devices_sharing_an_address_are_told_apart_by_port(
    client: Any, plant: Any, make_device: Any
) -> None:
    one = make_device("gw-22", ssh_host="10.40.9.1", ssh_port=22, zone=plant["zone_a"])
    two = make_device("gw-2222", ssh_host="10.40.9.1", ssh_port=2222, zone=plant["zone_a"])
    note = {"note": "X::Y", "id.orig_h": "10.9.9.9", "id.resp_h": "10.40.9.1", "id.resp_p": 2222}
    response = post_signal(client, "zeek-a", plant["secret"], json.dumps(note))
    assert response.status_code == 202, response.content
    assert Signal.objects.get().device == two
    note["id.resp_p"] = 22
    post_signal(client, "zeek-a", plant["secret"], json.dumps(note))
    assert Signal.objects.filter(device=one).count() == 1


def test_a_shared_address_without_a_telling_port_matches_no_device(
    client: Any, plant: Any, make_device: Any
) -> None:
    make_device("gw-22", ssh_host="10.40.9.1", ssh_port=22, zone=plant["zone_a"])
    make_device("gw-2222", ssh_host="10.40.9.1", ssh_port=2222, zone=plant["zone_a"])
    note = {"note": "X::Y", "id.orig_h": "10.9.9.9", "id.resp_h": "10.40.9.1"}
    response = post_signal(client, "zeek-a", plant["secret"], json.dumps(note))
    assert response.status_code == 422
    assert not Signal.objects.exists()


def test_one_bad_record_in_a_batch_is_refused_alone(client: Any, plant: Any) -> None:
    good = {"note": "SSH::Password_Guessing", "src": "10.9.9.9", "dst": "10.40.1.7"}
    planted = {**good, "note": "SSL::Invalid_Server_Cert", "sub": "CN=" + "x" * 600}
    no_address = {"note": "Scan::Port_Scan", "msg": "no address"}
    body = "\n".join(json.dumps(r) for r in (good, planted, no_address, good))
    response = post_signal(client, "zeek-a", plant["secret"], body)
    assert response.status_code == 207, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 202, 400, 202]
    assert "names no address" in results[2]["error"]
    assert Signal.objects.count() == 3
    assert Signal.objects.filter(kind="SSL::Invalid_Server_Cert").get().detail.count("x…") == 1


def test_a_batch_record_about_a_foreign_zone_is_refused_alone(client: Any, plant: Any) -> None:
    body = generic("plc-a", "low") + "\n" + generic("plc-b", "low")
    response = post_signal(client, "zeek-a", plant["secret"], body)
    assert response.status_code == 207
    assert [r["status"] for r in response.json()["results"]] == [202, 403]
    assert list(Signal.objects.values_list("device__slug", flat=True)) == ["plc-a"]


@pytest.mark.parametrize(
    "body",
    [
        '{"event_type": "alert", "src_ip": "10.40.1.7", "alert": {"severity": Infinity}}',
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": NaN}',
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": -Infinity}',
        '{"event_type": "alert", "src_ip": "10.40.1.7", "alert": {"severity": 1e999}}',
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": '
        + "[" * 5000
        + "]" * 5000
        + "}",
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": ' + "[" * 17 + "]" * 17 + "}",
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": "' + "y" * 9000 + '"}',
        '{"device": "plc-a", "severity": "high", "kind": "k", "x": ' + "9" * 9000 + "}",
    ],
)
def test_hostile_json_is_a_400_before_any_state_is_spent(
    client: Any, plant: Any, body: str
) -> None:
    response = post_signal(client, "zeek-a", plant["secret"], body, nonce="hostile-1")
    assert response.status_code == 400, response.content
    assert not Signal.objects.exists()
    assert not SignalReceipt.objects.exists()
    assert Sensor.objects.get(pk=plant["sensor"].pk).tokens_at is None


def test_a_boolean_suricata_severity_is_refused(client: Any, plant: Any) -> None:
    body = '{"event_type": "alert", "dest_ip": "10.40.1.7", "alert": {"severity": true}}'
    response = post_signal(client, "zeek-a", plant["secret"], body)
    assert response.status_code == 400
    assert not Signal.objects.exists()


def test_unknown_sensor_and_bad_signature_get_the_same_answer(client: Any, plant: Any) -> None:
    body = generic("plc-a", "low")
    unknown = post_signal(client, "no-such-sensor", plant["secret"], body)
    forged = post_signal(client, "zeek-a", "not-the-secret", body)
    assert (unknown.status_code, unknown.content) == (forged.status_code, forged.content)
    assert unknown.status_code == 401


def test_a_stale_timestamp_answer_does_not_depend_on_the_sensor_existing(
    client: Any, plant: Any
) -> None:
    body = generic("plc-a", "low")
    old = int(timezone.now().timestamp()) - 3600
    unknown = post_signal(client, "no-such-sensor", plant["secret"], body, timestamp=old)
    known = post_signal(client, "zeek-a", plant["secret"], body, timestamp=old)
    assert (unknown.status_code, unknown.content) == (known.status_code, known.content)


def test_a_live_session_on_the_device_makes_a_named_user_lockable(
    client: Any, plant: Any, make_vendor_user: Any, make_grant: Any
) -> None:
    alice = make_vendor_user("alice")
    grant = make_grant(alice, plant["a"], ends_at=timezone.now() + timedelta(hours=2))
    session = Session.objects.create(user=alice, device=plant["a"], grant=grant)
    response = post_signal(client, "zeek-a", plant["secret"], generic("plc-a", user="alice"))
    assert response.status_code == 202
    assert Signal.objects.get().sessions.get() == session
