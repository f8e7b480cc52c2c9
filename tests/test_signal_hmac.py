"""The signed webhook: only a request MACed with the sensor's own secret
over "<timestamp>.<id>." + body, within five minutes, is acted on."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from broker.models import AuditEvent, Lock
from sessions.anomalies.intake import signature
from sessions.models import Sensor, Signal
from tests.support.signing import create_sensor, post_signal

BODY = json.dumps({"device": "plc-7", "severity": "high", "kind": "test", "detail": "x"})


@pytest.fixture
def sensor(make_device: Any) -> tuple[Sensor, str]:
    make_device("plc-7")
    return create_sensor("ot-monitor")


def test_a_correctly_signed_signal_is_accepted_and_stored(client: Any, sensor: Any) -> None:
    response = post_signal(client, "ot-monitor", sensor[1], BODY)
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    signal = Signal.objects.get()
    assert signal.sensor == sensor[0] and signal.device.slug == "plc-7"
    assert AuditEvent.objects.filter(action="signal.received", actor="sensor:ot-monitor").exists()


def test_the_signature_is_hmac_sha256_over_timestamp_id_and_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b"1700000000.abc." + b"{}", hashlib.sha256).hexdigest()
    assert signature("s3cret", "1700000000", "abc", b"{}") == f"sha256={expected}"


def test_a_forged_signature_is_refused_audited_and_changes_nothing(
    client: Any, sensor: Any
) -> None:
    response = post_signal(client, "ot-monitor", "not-the-secret", BODY)
    assert response.status_code == 401
    assert not Signal.objects.exists() and not Lock.objects.exists()
    event = AuditEvent.objects.get(action="signal.rejected")
    assert event.data["why"] == "bad_signature"


def test_a_body_changed_after_signing_is_refused(client: Any, sensor: Any) -> None:
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    headers = {
        "X-Airlock-Sensor": "ot-monitor",
        "X-Airlock-Timestamp": ts,
        "X-Airlock-Id": nonce,
        "X-Airlock-Signature": signature(sensor[1], ts, nonce, BODY.encode()),
    }
    tampered = BODY.replace("high", "low")
    response = client.post(
        "/api/signals/", data=tampered, content_type="application/json", headers=headers
    )
    assert response.status_code == 401
    assert not Signal.objects.exists()


def test_another_sensors_secret_does_not_sign_for_this_one(client: Any, sensor: Any) -> None:
    _, other_secret = create_sensor("other")
    response = post_signal(client, "ot-monitor", other_secret, BODY)
    assert response.status_code == 401


def test_an_unknown_sensor_is_refused_and_audited(client: Any, sensor: Any) -> None:
    response = post_signal(client, "nobody", sensor[1], BODY)
    assert response.status_code == 401
    assert AuditEvent.objects.get(action="signal.rejected").data["why"] == "unknown_sensor"


def test_a_disabled_sensor_is_refused(client: Any, sensor: Any) -> None:
    Sensor.objects.filter(pk=sensor[0].pk).update(is_active=False)
    assert post_signal(client, "ot-monitor", sensor[1], BODY).status_code == 401
    assert not Signal.objects.exists()


@pytest.mark.parametrize("offset", [-310, 310, -3600, 86400])
def test_a_stale_or_future_timestamp_is_refused(client: Any, sensor: Any, offset: int) -> None:
    response = post_signal(
        client, "ot-monitor", sensor[1], BODY, timestamp=int(time.time()) + offset
    )
    assert response.status_code == 401
    assert "window" in response.json()["error"]
    assert AuditEvent.objects.get(action="signal.rejected").data["why"] == "stale_timestamp"


def test_a_timestamp_within_five_minutes_is_accepted(client: Any, sensor: Any) -> None:
    response = post_signal(client, "ot-monitor", sensor[1], BODY, timestamp=int(time.time()) - 290)
    assert response.status_code == 202


@pytest.mark.parametrize(
    "missing", ["X-Airlock-Sensor", "X-Airlock-Timestamp", "X-Airlock-Id", "X-Airlock-Signature"]
)
def test_a_request_missing_a_header_is_refused(client: Any, sensor: Any, missing: str) -> None:
    response = post_signal(client, "ot-monitor", sensor[1], BODY, headers={missing: ""})
    assert response.status_code == 401
    assert not Signal.objects.exists()


def test_a_malformed_id_or_timestamp_is_refused(client: Any, sensor: Any) -> None:
    assert (
        post_signal(
            client, "ot-monitor", sensor[1], BODY, nonce="has spaces/and slashes"
        ).status_code
        == 401
    )
    assert (
        post_signal(
            client, "ot-monitor", sensor[1], BODY, headers={"X-Airlock-Timestamp": "12.5"}
        ).status_code
        == 401
    )


def test_a_one_mebibyte_body_is_refused_without_being_stored(client: Any, sensor: Any) -> None:
    body = json.dumps(
        {"device": "plc-7", "severity": "low", "kind": "big", "detail": "x" * (1024 * 1024)}
    )
    response = post_signal(client, "ot-monitor", sensor[1], body)
    assert response.status_code == 413
    assert not Signal.objects.exists()


def test_malformed_json_with_a_good_signature_is_a_clear_400(client: Any, sensor: Any) -> None:
    response = post_signal(client, "ot-monitor", sensor[1], "{not json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]
    assert not Signal.objects.exists()


def test_the_endpoint_needs_no_login_and_no_csrf_token(sensor: Any) -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert post_signal(strict, "ot-monitor", sensor[1], BODY).status_code == 202


def test_get_is_not_allowed(client: Any) -> None:
    assert client.get("/api/signals/").status_code == 405


def test_the_sensor_secret_is_encrypted_at_rest(sensor: Any) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ciphertext FROM access_sessions_sensor WHERE id = %s", [sensor[0].pk]
        )
        raw = bytes(cursor.fetchone()[0])
    assert sensor[1].encode() not in raw
    assert Sensor.objects.get(pk=sensor[0].pk).secret() == sensor[1]
    assert sensor[1] not in repr(sensor[0])


def test_the_sensor_rate_limit_refuses_with_429(client: Any, sensor: Any) -> None:
    Sensor.objects.filter(pk=sensor[0].pk).update(rate_per_minute=3)
    codes = [post_signal(client, "ot-monitor", sensor[1], BODY).status_code for _ in range(5)]
    assert codes[:3] == [202, 202, 202]
    assert codes[3:] == [429, 429]
    assert Signal.objects.count() == 3
