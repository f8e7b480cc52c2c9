"""asciicast v2 recordings: incremental, hashed, fail closed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from sessions.live.recording import AsciicastWriter, RecordingError, file_sha256
from tests.conftest import need


def test_recording_is_valid_asciicast_v2_with_header_and_events(tmp_path):
    w = AsciicastWriter(tmp_path / "a.cast")
    w.header(
        width=100,
        height=30,
        title="alice on plc-7",
        env={"TERM": "xterm"},
        extra={"airlock": {"device": "plc-7"}},
    )
    w.output(b"hello\r\n", 0.5)
    w.input(b"ls\r", 1.0)
    w.resize(120, 40, 1.5)
    digest = w.close()
    lines = (tmp_path / "a.cast").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 100 and header["height"] == 30
    assert header["airlock"]["device"] == "plc-7"
    assert [json.loads(x) for x in lines[1:]] == [
        [0.5, "o", "hello\r\n"],
        [1.0, "i", "ls\r"],
        [1.5, "r", "120x40"],
    ]
    assert digest == hashlib.sha256((tmp_path / "a.cast").read_bytes()).hexdigest()
    assert digest == file_sha256(tmp_path / "a.cast")


def test_flush_writes_buffered_events_to_disk_before_close(tmp_path):
    w = AsciicastWriter(tmp_path / "b.cast")
    w.output(b"first second", 0.1)
    assert (tmp_path / "b.cast").read_bytes() == b""
    w.flush()
    w.wait()
    assert b"first second" in (tmp_path / "b.cast").read_bytes()
    w.close()


def test_recording_file_is_private_and_never_overwritten(tmp_path):
    w = AsciicastWriter(tmp_path / "c.cast")
    w.close()
    assert oct(os.stat(tmp_path / "c.cast").st_mode & 0o777) == "0o600"
    with pytest.raises(RecordingError):
        AsciicastWriter(tmp_path / "c.cast")


def test_invalid_utf8_and_split_characters_are_recorded_safely(tmp_path):
    w = AsciicastWriter(tmp_path / "d.cast")
    snow = "☃".encode()
    w.output(snow[:1], 0.1)
    w.output(snow[1:] + b"\xff", 0.2)
    w.close()
    events = [json.loads(x) for x in (tmp_path / "d.cast").read_text().splitlines()[1:]]
    assert "".join(e[2] for e in events) == "☃\ufffd"


def test_plain_text_and_text_needing_escapes_both_round_trip(tmp_path):
    w = AsciicastWriter(tmp_path / "j.cast")
    samples = [
        b'plain "quoted" back\\slash\ttab\r\n',
        b"\x1b[31mred\x1b[0m \x00nul",
        "ünï ☃".encode(),
    ]
    for i, sample in enumerate(samples):
        w.output(sample, float(i))
    w.close()
    events = [json.loads(x) for x in (tmp_path / "j.cast").read_text().splitlines()[1:]]
    assert [e[2] for e in events] == [s.decode() for s in samples]


def test_large_chunks_are_split_into_bounded_events(tmp_path):
    w = AsciicastWriter(tmp_path / "e.cast")
    w.output(b"a" * 200_000, 0.1)
    w.close()
    events = (tmp_path / "e.cast").read_text().splitlines()[1:]
    assert len(events) == 4
    assert sum(len(json.loads(x)[2]) for x in events) == 200_000


def test_a_failing_disk_raises_so_the_session_can_end(tmp_path):
    if not os.path.exists("/dev/full"):
        need("needs /dev/full")
    w = AsciicastWriter(tmp_path / "f.cast")
    os.close(w._fd)
    w._fd = os.open("/dev/full", os.O_WRONLY)
    w.output(b"x", 0.1)
    w.flush()  # handed to the writer thread, which hits the full disk
    with pytest.raises(RecordingError):
        w.wait()
    assert w.closed


def test_an_unwritable_folder_raises_at_open(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "x").write_text("a file where a folder should be")
    with pytest.raises(RecordingError):
        AsciicastWriter(tmp_path / "ro" / "x" / "g.cast")


def test_asciinema_plays_the_recording(tmp_path):
    if not shutil.which("asciinema"):
        need("needs the asciinema CLI (Debian package asciinema)")
    w = AsciicastWriter(tmp_path / "h.cast")
    w.header(width=80, height=24)
    w.output(b"played-by-asciinema\r\n", 0.01)
    w.close()
    import pexpect

    child = pexpect.spawn("asciinema", ["play", str(tmp_path / "h.cast")], timeout=30)
    child.expect("played-by-asciinema")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
