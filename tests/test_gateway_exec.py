"""Exec and shell through the gateway: real OpenSSH client, real sshd device."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from sessions.live.recording import recordings_dir
from sessions.models import Command, Session
from tests.support.sshd import (
    device_sshd,
    ended_sessions,
    gateway,
    make_ssh_vendor,
    vendor,
    wait_for,
)  # noqa: F401

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def _recording_events(session: Session) -> list:
    lines = (recordings_dir() / session.recording).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_echo_through_the_gateway_prints_hi_and_is_recorded(vendor, device_sshd):
    result = vendor.ssh("echo hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    header, *events = _recording_events(session)
    assert header["version"] == 2
    assert header["airlock"]["device"] == vendor.device.slug
    assert any(e[1] == "o" and "hi" in e[2] for e in events)
    assert list(Command.objects.filter(session=session).values_list("text", "kind")) == [
        ("echo hi", "exec")
    ]
    digest = hashlib.sha256((recordings_dir() / session.recording).read_bytes()).hexdigest()
    assert session.recording_sha256 == digest
    assert session.bytes_out == 3
    assert any("Accepted password for airlockdev" in line for line in device_sshd.logins())


def test_exit_status_of_the_device_command_reaches_the_vendor(vendor):
    result = vendor.ssh("exit 7")
    assert result.returncode == 7


def test_stdin_is_relayed_and_stderr_stays_stderr(vendor):
    result = vendor.ssh("cat; echo oops >&2", input=b"line one\nline two\n")
    assert result.stdout == b"line one\nline two\n"
    assert b"oops" in result.stderr


def test_only_allowed_environment_variables_reach_the_device(vendor):
    result = vendor.ssh(
        "echo lang=$LANG ld=$LD_PRELOAD bash_env=$BASH_ENV",
        extra=["-o", "SendEnv=LANG LD_PRELOAD BASH_ENV"],
    )
    assert b"ld= bash_env=" in result.stdout


def test_exec_with_a_signal_exit_is_propagated(vendor):
    result = vendor.ssh("kill -TERM $$")
    assert result.returncode != 0


def test_a_signal_from_the_vendor_reaches_the_device_and_the_exit_signal_comes_back(vendor):
    import asyncio

    import asyncssh

    from sessions.doors.ssh.gateway import host_key_line

    async def run() -> tuple:
        key = asyncssh.read_private_key(str(vendor.key))
        trusted = asyncssh.import_public_key(host_key_line())
        async with asyncssh.connect(
            "127.0.0.1",
            vendor.gateway_port,
            username=vendor.login,
            client_keys=[key],
            known_hosts=([trusted], [], []),
            config=None,
            agent_path=None,
        ) as conn:
            ready = asyncio.Event()

            class Client(asyncssh.SSHClientSession):
                def data_received(self, data: str, datatype: Any) -> None:
                    if "ready" in data:
                        ready.set()

            chan, session = await conn.create_session(Client, "echo ready; exec sleep 600")
            await asyncio.wait_for(ready.wait(), 30)  # the device's command runs
            chan.send_signal("TERM")
            await asyncio.wait_for(chan.wait_closed(), 30)
            return chan.get_exit_signal(), chan.get_exit_status()

    exit_signal, status = asyncio.run(run())
    assert exit_signal is not None and exit_signal[0] == "TERM"


def test_no_recording_no_session(make_ssh_vendor, device_sshd, settings, tmp_path):
    """If the recording cannot be written, the vendor is refused (fail closed)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the recordings folder should be")
    settings.RECORDINGS_DIR = blocker
    v = make_ssh_vendor()
    result = v.ssh("echo hi")
    assert result.returncode == 255
    assert b"could not start recording" in result.stderr
    assert result.stdout == b""


def test_a_recording_that_fails_mid_session_ends_the_session(vendor, gateway):
    import os

    import pexpect

    args = vendor.ssh_args("while true; do echo tick; sleep 0.2; done")
    child = pexpect.spawn(args[0], args[1:], timeout=30)
    child.expect("tick")
    live = wait_for(lambda: gateway.live_sessions())[0]

    def break_the_disk() -> None:
        # One atomic swap: the writer thread never sees a closed or reused fd.
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, live.recorder._fd)
        os.close(full)

    gateway.loop.call_soon_threadsafe(break_the_disk)
    child.expect("could not be recorded")
    child.expect(pexpect.EOF)
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    assert "could not be recorded" in session.end_reason


def test_stopping_the_gateway_finishes_closing_a_session_whose_vendor_just_left(vendor, gateway):
    """A vendor leaves and the gateway stops at once (SIGTERM on a deploy):
    the session's end is still written before stop() returns."""
    import asyncio

    import pexpect

    from sessions.models import Session

    args = vendor.ssh_args("sleep 60")
    child = pexpect.spawn(args[0], args[1:], timeout=30)
    live = wait_for(lambda: gateway.live_sessions())[0]

    async def slow_vendor_side(_message: str) -> None:
        await asyncio.sleep(1)  # a vendor side that takes its time to close

    async def leave_and_stop() -> None:
        live._closers.append(slow_vendor_side)
        # What connection_lost does, then the shutdown, in the same loop turn.
        gateway.gateway.sessions.discard(live)
        gateway.gateway.spawn(live.close("the vendor disconnected"))
        await gateway.gateway.stop()

    gateway.call(leave_and_stop())
    session = Session.objects.get(code=live.code)
    assert session.ended_at is not None
    assert session.end_reason == "the vendor disconnected"
    child.close(force=True)
