"""Interactive sessions through the gateway (a real pty via pexpect), the
grant's end, and bulk output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from datetime import timedelta

import pexpect
import pytest
from django.utils import timezone

from broker.models import AuditEvent
from sessions.live.recording import recordings_dir
from sessions.models import Command
from tests.support.sshd import (  # noqa: F401
    DEVICE_USER,
    device_sshd,
    ended_sessions,
    gateway,
    make_ssh_vendor,
    vendor,
    wait_for,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def _spawn(v, *command: str, tty: bool = True) -> pexpect.spawn:
    args = v.ssh_args(*command, extra=["-tt"] if tty else [])
    return pexpect.spawn(args[0], args[1:], timeout=30)


def test_interactive_session_records_input_and_output_and_indexes_the_typed_line(vendor):
    child = _spawn(vendor)
    child.expect(r"[$#] ")
    child.send("echo hel")
    child.send("\x7f\x7f")  # backspace twice: "echo h"
    child.send("ello-airlock")  # "echo hello-airlock"
    child.send("\x1b[D\x1b[C")  # left, right: cursor back at the end
    child.send("\r")
    child.expect("hello-airlock")
    child.send("exit\r")
    child.expect(pexpect.EOF)
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    lines = list(
        Command.objects.filter(session=session, kind="line").values_list("text", flat=True)
    )
    assert lines == ["echo hello-airlock", "exit"]
    events = [
        json.loads(x) for x in (recordings_dir() / session.recording).read_text().splitlines()[1:]
    ]
    typed = "".join(e[2] for e in events if e[1] == "i")
    shown = "".join(e[2] for e in events if e[1] == "o")
    assert "ello-airlock" in typed and "\x7f" in typed
    assert "hello-airlock" in shown
    assert all(isinstance(e[0], float | int) for e in events)
    if shutil.which("asciinema"):
        player = pexpect.spawn(
            "asciinema", ["play", "-s", "50", str(recordings_dir() / session.recording)], timeout=30
        )
        player.expect("hello-airlock")
        player.expect(pexpect.EOF)


def test_window_change_is_recorded_and_passed_to_the_device(vendor):
    child = _spawn(vendor)
    child.expect(r"[$#] ")
    child.setwinsize(40, 120)
    child.send("stty size\r")
    child.expect("40 120")
    child.send("exit\r")
    child.expect(pexpect.EOF)
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    events = [
        json.loads(x) for x in (recordings_dir() / session.recording).read_text().splitlines()[1:]
    ]
    assert ["r", "120x40"] in [[e[1], e[2]] for e in events]


def test_session_ends_exactly_at_the_end_of_the_grant_and_says_why(make_ssh_vendor):
    ends_at = timezone.now() + timedelta(seconds=8)  # room for a slow machine to connect
    v = make_ssh_vendor(grant={"ends_at": ends_at})
    result = v.ssh("sleep 600", timeout=120)
    assert result.returncode != 0
    assert b"ended at" in result.stderr
    session = wait_for(lambda: ended_sessions(v.user))[0]
    assert session.ended_at >= ends_at
    assert "ended at" in session.end_reason
    # The device side is gone too: no sleep left behind for the device account.
    assert wait_for(
        lambda: (
            subprocess.run(
                ["pgrep", "-u", DEVICE_USER, "-f", "sleep 600"], capture_output=True
            ).returncode
            != 0
        )
    )


def test_vendor_is_warned_a_minute_before_the_grant_ends(make_ssh_vendor):
    # The one-minute warning comes 10 s after the grant is made: room to connect.
    v = make_ssh_vendor(grant={"ends_at": timezone.now() + timedelta(seconds=70)})
    child = _spawn(v, "sleep 600", tty=False)
    child.expect(r"ends at .* \(in 1 minute\)")
    child.terminate(force=True)


def test_terminate_closes_both_sides_and_tells_the_vendor(vendor, gateway):
    child = _spawn(vendor, "sleep 600", tty=False)
    live = wait_for(lambda: gateway.live_sessions())[0]
    gateway.call(live.terminate("an approver ended this session", by="approver1"))
    child.expect("an approver ended this session")
    child.expect(pexpect.EOF)
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    assert session.end_reason == "an approver ended this session"
    assert AuditEvent.objects.filter(action="session.end", actor="approver1").exists()


def test_a_hundred_megabytes_of_output_arrive_byte_exact(vendor, settings):
    settings.AIRLOCK_EXFIL_BYTES_PER_MINUTE = 1 << 40  # the volume detector would end it otherwise
    path = f"/home/{DEVICE_USER}/bulk-{os.getpid()}.bin"
    data = os.urandom(100 * 1000 * 1000)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o644)
    try:
        proc = subprocess.run(vendor.ssh_args(f"cat {path}"), capture_output=True, timeout=280)
        assert proc.returncode == 0, proc.stderr[-500:]
        assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
        session = wait_for(lambda: ended_sessions(vendor.user))[0]
        assert session.bytes_out == len(data)
        assert session.recording_sha256
    finally:
        os.unlink(path)


def test_a_shortened_window_ends_the_live_session_at_the_new_time(vendor, gateway):
    child = _spawn(vendor, "sleep 600", tty=False)
    live = wait_for(lambda: gateway.live_sessions())[0]
    new_end = timezone.now() + timedelta(seconds=2)
    gateway.loop.call_soon_threadsafe(live.set_ends_at, new_end)
    child.expect("ended at")
    child.expect(pexpect.EOF)
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    assert session.ended_at >= new_end
