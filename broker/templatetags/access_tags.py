"""Template filters for the access pages: times in the plant's zone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template

from broker import approvals

register = template.Library()


def _zone_of(obj: Any):
    device = getattr(obj, "device", obj)
    return device.zone.tzinfo


@register.filter
def plant_time(value: datetime | None, obj: Any) -> str:
    """{{ grant.ends_at|plant_time:grant }} → '24 Nov 2026 14:00 CET'.
    `obj` is a device or anything with a device (request, grant, lock)."""
    if value is None:
        return ""
    return value.astimezone(_zone_of(obj)).strftime("%d %b %Y %H:%M %Z")


@register.filter
def window(obj: Any) -> str:
    return approvals.describe_window(obj)


@register.filter
def progress(req: Any) -> str:
    return approvals.quorum_progress(req).summary
