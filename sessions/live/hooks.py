"""Where other parts plug into the session core without the core importing
them: the anomaly detectors register here (sessions/apps.py, once apps are
loaded), so sessions.live never imports sessions.anomalies and the
anomalies -> revocation -> control direction has no way back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# Called with each LiveSession as it is put under control (may be async):
# the detectors attach their observers here.
session_opened: list[Callable[[Any], Awaitable[None] | None]] = []
# Called (sync, in a worker thread) for a connection refused for being
# outside its window: (user, device, reason sentence, source_ip).
refused_outside_window: list[Callable[[Any, Any, str, str | None], None]] = []
# Called (sync) when a device presents another host key than the pinned one:
# (device, presented, source_ip).
host_key_changed: list[Callable[[Any, str, str | None], None]] = []


def register(
    *,
    opened: Callable[[Any], Awaitable[None] | None] | None = None,
    outside_window: Callable[[Any, Any, str, str | None], None] | None = None,
    host_key: Callable[[Any, str, str | None], None] | None = None,
) -> None:
    """Add hooks once (registering the same function twice is a no-op, so a
    second app-ready in tests does not double the signals)."""
    for hooks, hook in (
        (session_opened, opened),
        (refused_outside_window, outside_window),
        (host_key_changed, host_key),
    ):
        if hook is not None and hook not in hooks:
            hooks.append(hook)
