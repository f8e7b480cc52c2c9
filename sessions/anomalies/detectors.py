"""Streaming detectors: observers the session core feeds as bytes pass
(no second read of the recording). Each reports through
`live.signal(kind, severity, detail)`, which the core hands to the response
policy (sessions/anomalies/response.py) — the same path a sensor's signal takes.

In a live session:
- CommandRules: deny rules per zone (regular expression + severity) on every
  exec command and typed line; built-in defaults below apply everywhere.
- OutputVolume: more than AIRLOCK_EXFIL_BYTES_PER_MINUTE from the device to
  the vendor within any 60 seconds.
- MachineSpeedInput: a sustained run of single keystrokes arriving faster
  than any person types (a paste arrives as one large chunk and is not this).
- OutOfWindow: input after the grant's end (the core's timer should have
  ended it; this catches a clock or timer failure).

At the door (the gateway calls these plain functions):
- second_source(): a second live session on the same grant from another
  source address at the same time.
- attempt_outside_window(): a connection refused because the window has not
  started or has ended.
- host_key_changed(): the device presented another host key than the pinned.

Observers do O(1) work per chunk and never touch the database: they run on
the relay's data path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from broker.models import Device, User
from sessions.anomalies.models import CommandRule, Signal
from sessions.anomalies.response import detector_signal, raise_signal
from sessions.live import hooks
from sessions.live.core import Observer
from sessions.models import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    pattern: str
    severity: str
    description: str


# Built-in command deny rules. They match a command anywhere in the line
# (after `sudo`, in a pipeline, after `;`).
DEFAULT_COMMAND_RULES: tuple[Rule, ...] = (
    Rule(
        r"(?:^|[\s;&|(])(?:flashrom|fwupdmgr|fwupdtool|avrdude|dfu-util|stm32flash|esptool(?:\.py)?"
        r"|flashcp|flash_erase|nandwrite|mtd\s+write)(?=\s|$)",
        "high",
        "firmware flash tool",
    ),
    Rule(
        r"(?:^|[\s;&|(])rm\s+(?:-{1,2}[\w-]+\s+)*-[A-Za-z]*[rR][A-Za-z]*\s+(?:-{1,2}[\w-]+\s+)*"
        r"/(?:\*|\s|$|;)",
        "critical",
        "rm -rf / (erase the root file system)",
    ),
    Rule(r"(?:^|[\s;&|(])dd\s[^;&|]*\bof=/dev/", "high", "dd writing to a raw device"),
    Rule(
        r"(?:^|[\s;&|(])(?:ip6?tables|iptables-legacy|iptables-nft)\s[^;&|]*(?:-F|--flush)\b"
        r"|(?:^|[\s;&|(])nft\s+flush\s+ruleset",
        "high",
        "firewall rules flushed",
    ),
)


class CommandRules(Observer):
    """Signals every command matching a deny rule."""

    kind = "command_rule"

    def __init__(self, live: Any, rules: list[Rule]) -> None:
        self.live = live
        self.rules = [(re.compile(r.pattern), r) for r in rules]

    def on_command(self, text: str, t: float) -> None:
        for regex, rule in self.rules:
            if regex.search(text):
                self.live.signal(self.kind, rule.severity, f"{rule.description}: {text[:200]}")


class OutputVolume(Observer):
    """Signals when more than `limit` bytes leave the device for the vendor
    within 60 seconds (one-second buckets; at most one signal a minute)."""

    kind = "data_volume"

    def __init__(self, live: Any, limit: int) -> None:
        self.live = live
        self.limit = limit
        self.buckets = [0] * 60
        self.total = 0
        self.second = 0
        self.quiet_until = -1

    def on_output(self, data: bytes, t: float) -> None:
        self._add(len(data), int(t))

    def on_file(self, path: str, direction: str, size: int, sha256: str, t: float) -> None:
        # SFTP downloads pass through the core as files, not terminal output.
        if direction == "download":
            self._add(size, int(t))

    def _add(self, n: int, second: int) -> None:
        if second > self.second:
            for s in range(self.second + 1, min(second, self.second + 60) + 1):
                self.total -= self.buckets[s % 60]
                self.buckets[s % 60] = 0
            self.second = second
        self.buckets[second % 60] += n
        self.total += n
        if self.total > self.limit and second >= self.quiet_until:
            self.quiet_until = second + 60
            self.live.signal(
                self.kind,
                "high",
                f"{self.total} bytes from the device in the last minute (limit {self.limit})",
            )


class MachineSpeedInput(Observer):
    """Signals a sustained run of keystrokes no person types: `run`
    consecutive single keystrokes (chunks of at most 4 bytes, so an arrow
    key's escape sequence counts as one) each arriving within `gap` seconds
    of the one before. A paste arrives as one large chunk and resets the run;
    so does any pause."""

    kind = "machine_speed_input"

    def __init__(self, live: Any, *, gap: float = 0.012, run: int = 40) -> None:
        self.live = live
        self.gap = gap
        self.run = run
        self.count = 0
        self.last_t: float | None = None
        self.fired = False

    def on_input(self, data: bytes, t: float) -> None:
        if len(data) > 4:
            self.count = 0
        elif self.last_t is not None and t - self.last_t <= self.gap:
            self.count += 1
        else:
            self.count = 0
        self.last_t = t
        if self.count >= self.run and not self.fired:
            self.fired = True
            self.live.signal(
                self.kind,
                "high",
                f"{self.count} keystrokes in a row at under {self.gap * 1000:.0f} ms "
                "apart: typed by a machine, not a person",
            )


class OutOfWindow(Observer):
    """Signals input that arrives after the grant's end (checked at most
    once a second, against the wall clock)."""

    kind = "out_of_window"

    def __init__(self, live: Any, ends_at: Any) -> None:
        self.live = live
        self.ends_at = ends_at
        self.next_check = 0.0
        self.fired = False

    def on_input(self, data: bytes, t: float) -> None:
        now = time.monotonic()
        if self.fired or now < self.next_check:
            return
        self.next_check = now + 1.0
        if timezone.now() >= self.ends_at:
            self.fired = True
            self.live.signal(self.kind, "high", "input after the end of the approved window")


class ResponsePolicy(Observer):
    """Hands every signal of the session to the zone's response policy
    (sessions/anomalies/response.py). The core calls `on_signal` for each
    `live.signal(...)`; the database work runs in a worker thread."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.pending: set[asyncio.Task] = set()

    def on_signal(self, kind: str, severity: str, detail: str) -> None:
        task = asyncio.ensure_future(
            database_sync_to_async(detector_signal)(self.live.session.pk, kind, severity, detail)
        )
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "signal of session %s not handled: %r", self.live.session.code, task.exception()
            )


# --- building the set for a session (sync: runs in a worker thread) -------------


def command_rules_for(device: Device) -> list[Rule]:
    rules = list(DEFAULT_COMMAND_RULES)
    rules += [Rule(r.pattern, r.severity, r.description) for r in CommandRule.for_zone(device.zone)]
    return rules


def observers_for(live: Any, device: Device, ends_at: Any) -> list[Any]:
    """The detectors for one live session."""
    return [
        ResponsePolicy(live),
        CommandRules(live, command_rules_for(device)),
        OutputVolume(
            live, int(getattr(settings, "AIRLOCK_EXFIL_BYTES_PER_MINUTE", 64 * 1024 * 1024))
        ),
        MachineSpeedInput(live),
        OutOfWindow(live, ends_at),
    ]


async def install(live: Any) -> None:
    """Load the rules, attach the detectors to `live` (a LiveSession) and
    report a second source address for the same grant at once."""
    observers, other, grant_code = await database_sync_to_async(_prepare)(live)
    live.observers.extend(observers)
    if other is not None:
        live.signal(
            "second_source",
            "high",
            f"grant {grant_code} is in use from {other} and from "
            f"{live.session.source_ip} at the same time",
        )


def _prepare(live: Any) -> tuple[list[Any], str | None, str]:
    session = Session.objects.select_related("device__zone", "grant").get(pk=live.session.pk)
    observers = observers_for(live, session.device, session.grant.ends_at)
    return observers, second_source(session), str(session.grant.code)


def second_source(session: Any) -> str | None:
    """Another source address with a live session on the same grant."""
    others = (
        Session.objects.live()
        .filter(grant_id=session.grant_id)
        .exclude(pk=session.pk)
        .exclude(source_ip=session.source_ip)
        .exclude(source_ip=None)
        .values_list("source_ip", flat=True)
    )
    return next(iter(others), None) if session.source_ip else None


def attempt_outside_window(
    user: User, device: Device, *, reason: str, source_ip: str | None
) -> Any:
    """The gateway refused a connection because the window has not started
    or has ended: a signal (medium by default: alert the approvers)."""
    return raise_signal(
        origin=Signal.Origin.DETECTOR,
        kind="out_of_window",
        severity="medium",
        detail=f"{user.username} tried to connect outside the window: {reason}",
        device=device,
        user=user,
        address=source_ip,
        source_ip=source_ip,
    )


def host_key_changed(
    device: Device, *, presented: str, user: User | None = None, source_ip: str | None = None
) -> Any:
    """The device presented a host key other than the pinned one (the
    connection was refused). Not the vendor's doing, so no user is named."""
    return raise_signal(
        origin=Signal.Origin.DETECTOR,
        kind="host_key_changed",
        severity="high",
        detail=f"{device.slug} presented host key {presented[:120]}, not the pinned one",
        device=device,
        address=source_ip,
        source_ip=source_ip,
    )


def _outside_window(user: User, device: Device, reason: str, source_ip: str | None) -> None:
    attempt_outside_window(user, device, reason=reason, source_ip=source_ip)


def _host_key(device: Device, presented: str, source_ip: str | None) -> None:
    host_key_changed(device, presented=presented, source_ip=source_ip)


def register_hooks() -> None:
    """Plug the detectors into the session core (called from sessions/apps.py)."""
    hooks.register(opened=install, outside_window=_outside_window, host_key=_host_key)
