"""Replay protection: an X-Airlock-Id is spent once per sensor, by a unique
row, so a captured request cannot be sent again."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from broker.models import AuditEvent
from sessions.live import sweep
from sessions.models import Signal, SignalReceipt
from tests.support.signing import create_sensor, post_signal

BODY = json.dumps({"device": "plc-7", "severity": "low", "kind": "test"})


@pytest.fixture
def secret(make_device: Any) -> str:
    make_device("plc-7")
    return create_sensor("ot-monitor")[1]


def test_the_same_request_sent_twice_is_accepted_once(client: Any, secret: str) -> None:
    ts = int(time.time())
    first = post_signal(client, "ot-monitor", secret, BODY, timestamp=ts, nonce="evt-0001")
    again = post_signal(client, "ot-monitor", secret, BODY, timestamp=ts, nonce="evt-0001")
    assert first.status_code == 202
    assert again.status_code == 401
    assert "already used" in again.json()["error"]
    assert Signal.objects.count() == 1
    assert AuditEvent.objects.get(action="signal.rejected").data == {
        "why": "replayed_id",
        "id": "evt-0001",
    }


def test_a_reused_id_with_a_new_timestamp_and_body_is_still_a_replay(
    client: Any, secret: str
) -> None:
    post_signal(client, "ot-monitor", secret, BODY, nonce="evt-0002")
    other = json.dumps({"device": "plc-7", "severity": "critical", "kind": "other"})
    response = post_signal(
        client, "ot-monitor", secret, other, timestamp=int(time.time()) + 5, nonce="evt-0002"
    )
    assert response.status_code == 401
    assert Signal.objects.count() == 1


def test_ids_are_per_sensor(client: Any, secret: str) -> None:
    _, second = create_sensor("suricata-1")
    assert post_signal(client, "ot-monitor", secret, BODY, nonce="same").status_code == 202
    assert post_signal(client, "suricata-1", second, BODY, nonce="same").status_code == 202


def test_a_forged_request_does_not_spend_the_id(client: Any, secret: str) -> None:
    assert post_signal(client, "ot-monitor", "wrong", BODY, nonce="evt-9").status_code == 401
    assert post_signal(client, "ot-monitor", secret, BODY, nonce="evt-9").status_code == 202


def test_the_sweep_prunes_ids_older_than_the_window_only(client: Any, secret: str) -> None:
    post_signal(client, "ot-monitor", secret, BODY, nonce="old")
    post_signal(client, "ot-monitor", secret, BODY, nonce="new")
    SignalReceipt.objects.filter(nonce="old").update(
        received_at=timezone.now() - timedelta(minutes=11)
    )

    sweep.run(timezone.now())

    assert list(SignalReceipt.objects.values_list("nonce", flat=True)) == ["new"]
