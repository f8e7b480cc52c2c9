"""Signal formats: the generic JSON form, Zeek notice.log JSON lines and
Suricata EVE alerts, parsed from real-format sample lines in tests/data/,
and mapped from addresses to devices and their live sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.models import Lock
from sessions.anomalies.formats import FormatError, parse
from sessions.models import Session, Signal
from tests.support.signing import DATA, create_sensor, post_signal


def test_zeek_notice_lines_become_one_report_each() -> None:
    reports, skipped = parse((DATA / "zeek_notice.log").read_bytes())
    assert skipped == 0
    assert [r.kind for r in reports] == [
        "Modbus::Unauthorized_Write",
        "Scan::Port_Scan",
        "SSH::Password_Guessing",
        "SSL::Invalid_Server_Cert",
    ]
    write = reports[0]
    assert write.format == "zeek"
    assert write.severity == "high"
    assert write.devices == ["10.40.1.7", "10.20.0.15"]  # responder first
    assert (
        "holding registers" in write.detail and "10.20.0.15:51234 → 10.40.1.7:502" in write.detail
    )
    assert reports[1].severity == "medium"  # scans are lowered
    assert reports[3].severity == "low"


def test_a_zeek_notice_may_carry_its_own_airlock_severity() -> None:
    line = json.dumps(
        {
            "ts": 1.0,
            "note": "Site::Custom",
            "msg": "m",
            "src": "10.0.0.1",
            "airlock_severity": "critical",
        }
    )
    assert parse(line.encode())[0][0].severity == "critical"


def test_suricata_eve_keeps_alerts_and_skips_other_event_types() -> None:
    reports, skipped = parse((DATA / "suricata_eve.json").read_bytes())
    assert skipped == 2  # the flow and the stats record
    modbus, curl = reports
    assert modbus.format == "suricata" and modbus.kind == "suricata:2102008"
    assert modbus.severity == "high"  # Suricata priority 1
    assert modbus.devices == ["10.40.1.7", "10.20.0.15"]
    assert modbus.detail.startswith("ET SCADA Modbus TCP Write Multiple Registers")
    assert "[Attempted Administrator Privilege Gain]" in modbus.detail
    assert curl.severity == "medium"  # priority 2
    assert curl.devices == ["198.51.100.23", "10.40.1.7"]


def test_the_generic_form_is_validated() -> None:
    report = parse((DATA / "generic_signal.json").read_bytes())[0][0]
    assert (report.format, report.severity, report.user) == ("generic", "high", "alice")
    assert report.devices == ["10.40.1.7"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"device": "plc-7", "severity": "urgent", "kind": "k"}', "severity"),
        (b'{"device": "plc-7", "severity": "low"}', '"kind" is required'),
        (b'{"device": 7, "severity": "low", "kind": "k"}', "must be a string"),
        (b'{"device": "plc-7", "severity": "low", "kind": "k", "session": "nope"}', "UUID"),
        (b'{"hello": "world"}', "not a generic signal"),
        (b'{"note": "X::Y", "msg": "no addresses"}', "names no address"),
        (b'{"event_type": "alert", "src_ip": "10.0.0.1"}', '"alert" object'),
        (b'{"ts": 1}\nnot json\n', "line 2"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_malformed_input_gets_a_clear_reason(body: bytes, message: str) -> None:
    with pytest.raises(FormatError) as error:
        parse(body)
    assert message in str(error.value)


# --- through the endpoint: addresses → devices → live sessions ----------------------


@pytest.fixture
def plant(make_vendor_user: Any, make_device: Any, make_grant: Any) -> dict[str, Any]:
    device = make_device("plc-7", ssh_host="10.40.1.7")
    alice = make_vendor_user("alice")
    grant = make_grant(alice, device)
    session = Session.objects.create(user=alice, device=device, grant=grant, source_ip="192.0.2.5")
    sensor, secret = create_sensor("zeek-ot-1")
    return {"device": device, "alice": alice, "session": session, "secret": secret}


def test_a_zeek_batch_maps_addresses_to_the_device_and_its_live_session(
    client: Any, plant: dict[str, Any]
) -> None:
    response = post_signal(
        client, "zeek-ot-1", plant["secret"], (DATA / "zeek_notice.log").read_bytes()
    )
    assert response.status_code == 202, response.content
    # SSH::Password_Guessing names only 10.20.0.99, which is no device of ours.
    assert response.json()["accepted"] == 3 and response.json()["ignored"] == 1
    signals = Signal.objects.filter(format="zeek")
    assert {s.device for s in signals} == {plant["device"]}
    write = signals.get(kind="Modbus::Unauthorized_Write")
    assert list(write.sessions.all()) == [plant["session"]]
    assert write.address == "10.40.1.7"


def test_a_suricata_file_maps_alerts_to_the_device(client: Any, plant: dict[str, Any]) -> None:
    response = post_signal(
        client, "zeek-ot-1", plant["secret"], (DATA / "suricata_eve.json").read_bytes()
    )
    assert response.status_code == 202
    assert Signal.objects.filter(format="suricata").count() == 2
    assert response.json()["ignored"] == 2


def test_an_unknown_device_address_is_a_422_and_nothing_is_revoked(
    client: Any, plant: dict[str, Any]
) -> None:
    body = json.dumps({"device": "10.99.99.99", "severity": "critical", "kind": "k"})
    response = post_signal(client, "zeek-ot-1", plant["secret"], body)
    assert response.status_code == 422
    assert "10.99.99.99" in response.json()["error"]
    assert not Signal.objects.exists() and not Lock.objects.exists()


def test_a_signal_naming_another_vendors_session_is_refused(
    client: Any, plant: dict[str, Any], make_vendor_user: Any, make_device: Any, make_grant: Any
) -> None:
    other_device = make_device("hmi-2", ssh_host="10.40.1.8")
    bob = make_vendor_user("bob")
    bobs = Session.objects.create(
        user=bob, device=other_device, grant=make_grant(bob, other_device)
    )
    body = json.dumps(
        {"device": "plc-7", "severity": "critical", "kind": "k", "session": str(bobs.code)}
    )
    response = post_signal(client, "zeek-ot-1", plant["secret"], body)
    assert response.status_code == 422
    assert not Signal.objects.exists() and not Lock.objects.exists()
    body = json.dumps(
        {
            "device": "plc-7",
            "severity": "critical",
            "kind": "k",
            "session": str(plant["session"].code),
            "user": "bob",
        }
    )
    assert post_signal(client, "zeek-ot-1", plant["secret"], body).status_code == 422


def test_a_generic_signal_for_one_user_touches_only_that_users_sessions(
    client: Any, plant: dict[str, Any], make_vendor_user: Any, make_grant: Any
) -> None:
    carol = make_vendor_user("carol")
    Session.objects.create(
        user=carol, device=plant["device"], grant=make_grant(carol, plant["device"])
    )
    body = json.dumps({"device": "plc-7", "severity": "low", "kind": "k", "user": "alice"})
    assert post_signal(client, "zeek-ot-1", plant["secret"], body).status_code == 202
    assert list(Signal.objects.get().sessions.all()) == [plant["session"]]
