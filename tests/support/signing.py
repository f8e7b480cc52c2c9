"""Helpers for tests that post signed signals (not fixtures: plain functions)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from broker.models import Zone
from sessions.anomalies.intake import signed_headers
from sessions.models import Sensor

DATA = Path(__file__).parent.parent / "data"


def create_sensor(name: str = "zeek-ot-1", *, zones: Any = None, **kw: Any) -> tuple[Sensor, str]:
    """A sensor bound to `zones` (default: every zone that exists now)."""
    secret = Sensor.new_secret()
    sensor = Sensor(name=name, **kw)
    sensor.set_secret(secret)
    sensor.save()
    sensor.zones.set(Zone.objects.all() if zones is None else zones)
    return sensor, secret


def post_signal(
    client: Any,
    name: str,
    secret: str,
    body: bytes | str,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    body = body.encode() if isinstance(body, str) else body
    signed = signed_headers(
        name,
        secret,
        body,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        nonce=nonce or uuid.uuid4().hex,
    )
    signed.update(headers or {})
    return client.post("/api/signals/", data=body, content_type="application/json", headers=signed)
