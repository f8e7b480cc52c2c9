"""The strict parser of the browser's half of the RFB stream (sessions/doors/rdp/rfb.py)."""

from __future__ import annotations

import struct

import pytest

from sessions.doors.rdp.rfb import (
    PROTOCOL_VERSION,
    ClientStream,
    CutText,
    Dropped,
    Key,
    KeyLog,
    Pointer,
    RFBError,
    ServerCutText,
    ServerStream,
    keysym_text,
)

HANDSHAKE = PROTOCOL_VERSION + b"\x01" + b"\x00"  # version, security None, ClientInit exclusive


def opened(**kw) -> ClientStream:
    stream = ClientStream(**kw)
    out, events = stream.feed(HANDSHAKE)
    assert out == PROTOCOL_VERSION + b"\x01\x01" and events == []
    return stream


def key(down: int, keysym: int) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


def test_client_init_is_always_rewritten_to_shared():
    stream = ClientStream()
    out, _ = stream.feed(HANDSHAKE)
    assert out[-1] == 1


def test_handshake_may_arrive_one_byte_at_a_time():
    stream = ClientStream()
    out = b""
    for i in range(len(HANDSHAKE)):
        out += stream.feed(HANDSHAKE[i : i + 1])[0]
    assert out == PROTOCOL_VERSION + b"\x01\x01"


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\n", b"RFB 003.003\n", b"RFB 003.008\n\x02"])
def test_other_versions_and_security_types_are_refused(start):
    with pytest.raises(RFBError):
        ClientStream().feed(start)


def test_keys_pointer_and_clipboard_are_seen_and_passed_on():
    stream = opened(allow_clipboard=True)
    data = (
        key(1, ord("a")) + struct.pack(">BBHH", 5, 1, 10, 20) + struct.pack(">BxxxI", 6, 3) + b"abc"
    )
    out, events = stream.feed(data)
    assert out == data
    assert events == [Key(True, ord("a")), Pointer(1, 10, 20), CutText("abc", 3, True)]


def test_messages_split_across_frames_are_reassembled():
    stream = opened()
    data = key(1, 0x41) + key(0, 0x41)
    out1, ev1 = stream.feed(data[:5])
    out2, ev2 = stream.feed(data[5:])
    assert out1 == b"" and ev1 == []
    assert out2 == data and ev2 == [Key(True, 0x41), Key(False, 0x41)]


def test_clipboard_is_dropped_but_reported_when_not_allowed():
    stream = opened(allow_clipboard=False)
    out, events = stream.feed(struct.pack(">BxxxI", 6, 4) + b"pass")
    assert out == b""
    assert events == [CutText("pass", 4, False)]


def test_oversized_clipboard_is_refused_before_it_is_buffered():
    stream = opened(max_cut_text=1024)
    with pytest.raises(RFBError, match="over the limit of 1024"):
        stream.feed(struct.pack(">BxxxI", 6, 1025))


def test_set_encodings_keeps_only_what_airlock_can_follow():
    stream = opened()
    # Tight, extended clipboard, Hextile, ZRLE, Raw, DesktopSize, a compression level
    encodings = [7, -1063131698, 5, 16, 0, -223, -250]
    out, _ = stream.feed(struct.pack(">BxH7i", 2, 7, *encodings))
    assert out == struct.pack(">BxH4i", 2, 4, 16, 0, -223, -250)


SERVER_HANDSHAKE = (
    PROTOCOL_VERSION
    + b"\x01\x01"
    + b"\x00" * 4
    + struct.pack(">HH", 4, 2)
    + bytes([32, 24, 0, 1])
    + b"\x00" * 12
    + struct.pack(">I", 3)
    + b"dev"
)


def server_stream() -> ServerStream:
    client = opened()
    server = ServerStream(client)
    assert server.feed(SERVER_HANDSHAKE) == []
    return server


def test_display_clipboard_is_found_between_screen_updates_in_any_chunking():
    raw = struct.pack(">HHHHi", 0, 0, 4, 2, 0) + b"\xab" * (4 * 2 * 4)
    zrle = struct.pack(">HHHHiI", 0, 0, 4, 2, 16, 5) + b"zzzzz"
    cursor = struct.pack(">HHHHi", 0, 0, 9, 2, -239) + b"c" * (9 * 2 * 4 + 2 * 2)
    update = struct.pack(">BxH", 0, 3) + raw + zrle + cursor
    cut = struct.pack(">BxxxI", 3, 6) + b"recipe"
    stream = (
        update
        + cut
        + struct.pack(">BxH", 0, 0xFFFF)
        + struct.pack(">HHHHi", 0, 0, 0, 0, -224)
        + b"\x02"
    )
    for size in (1, 3, 7, len(stream)):
        server = server_stream()
        found = []
        for i in range(0, len(stream), size):
            found += server.feed(stream[i : i + size])
        assert found == [ServerCutText("recipe", 6)]
        assert server.buffer == bytearray() and server.skip == 0


def test_an_encoding_airlock_did_not_allow_breaks_the_stream():
    server = server_stream()
    with pytest.raises(RFBError, match="encoding"):
        server.feed(struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, 1, 1, 7))


def test_view_only_streams_drop_input_but_keep_screen_requests():
    stream = opened(view_only=True, allow_clipboard=True)
    request = struct.pack(">BBHHHH", 3, 1, 0, 0, 100, 100)
    out, events = stream.feed(
        key(1, 0x61)
        + struct.pack(">BBHH", 5, 1, 1, 1)
        + request
        + struct.pack(">BxxxI", 6, 1)
        + b"x"
    )
    assert out == request and events == []


def test_desktop_resize_and_power_requests_are_dropped():
    stream = opened()
    resize = struct.pack(">BxHHBx", 251, 800, 600, 1) + b"\x00" * 16
    out, events = stream.feed(resize + struct.pack(">BxBB", 250, 1, 2))
    assert out == b"" and events == [Dropped("desktop resize"), Dropped("power request (XVP)")]


def test_qemu_extended_key_events_are_parsed_as_keys():
    stream = opened()
    data = struct.pack(">BBHII", 255, 0, 1, 0x62, 48)
    out, events = stream.feed(data)
    assert out == data and events == [Key(True, 0x62)]


@pytest.mark.parametrize(
    "message, why",
    [
        (b"\x07", "unknown RFB message"),
        (key(2, 0x61), "invalid down flag"),
        (struct.pack(">BxxxI", 6, 0xFFFFFFF0), "extended clipboard"),
        (struct.pack(">BxH", 2, 5000), "encodings"),
        (struct.pack(">BBHI", 255, 1, 0, 0), "subtype"),
        (struct.pack(">BxxxIB", 248, 0, 200), "fence"),
        (struct.pack(">BxHHBx", 251, 800, 600, 0), "screens"),
        (struct.pack(">BBHHHH", 3, 9, 0, 0, 1, 1), "malformed"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(message, why):
    with pytest.raises(RFBError, match=why):
        opened().feed(message)


def test_key_log_turns_keysyms_into_text_and_chords():
    log = KeyLog()
    typed = [log.feed(Key(True, k)) for k in (ord("l"), ord("s"), 0xFF0D)]
    assert typed == [("l", b"l"), ("s", b"s"), ("<Return>", b"\r")]
    log.feed(Key(True, 0xFFE3))  # Ctrl down
    assert log.feed(Key(True, ord("u"))) == ("<Ctrl+u>", b"\x15")
    log.feed(Key(True, 0xFFE9))  # Alt down
    assert log.feed(Key(True, 0xFFFF)) == ("<Alt+Ctrl+Delete>", b"")
    assert keysym_text(0x010020AC) == "€" and keysym_text(0xFFBE) is None
