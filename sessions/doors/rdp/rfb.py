"""The browser's half of an RFB (VNC) conversation, parsed strictly.

Browser RDP puts Airlock in the middle of the RFB stream between noVNC and
the session's private Xvnc. Every byte the browser sends passes through
`ClientStream.feed()` before it reaches Xvnc, so Airlock sees each key,
pointer and clipboard event, applies the session's policy, and refuses a
stream it does not understand instead of passing it on.

Only what noVNC speaks to TigerVNC is accepted: protocol 3.8, security type
None (the private socket has no other), and the client messages of RFC 6143
plus the extensions noVNC uses (fences, continuous updates, QEMU extended key
events). Anything else — an unknown message type, a bad length, a handshake
out of order — raises `RFBError` with a sentence for the vendor, and the
session ends.

Policy applied here, not in Xvnc:
- ClientInit is rewritten to "shared", so a watcher never disconnects the
  vendor (and the vendor never disconnects a watcher).
- The extended clipboard pseudo-encoding is removed from SetEncodings, so
  Xvnc never offers it and every clipboard transfer is a plain, bounded
  ClientCutText this parser can log and size-check.
- View-only streams (approvers watching) drop key, pointer and clipboard
  messages; desktop resize and XVP (power) requests are always dropped.
- Clipboard text over `max_cut_text` bytes ends the session; clipboard
  towards the device is dropped (and reported) unless the grant allows it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_VERSION = b"RFB 003.008\n"
SECURITY_NONE = 1
# Pseudo-encodings removed from the browser's SetEncodings (RFC 6143 §7.8 and
# the community registry): extended clipboard.
STRIPPED_ENCODINGS = {-1063131698}
MAX_ENCODINGS = 512
MAX_FENCE_PAYLOAD = 64
MAX_SCREENS = 16

# Client message types.
SET_PIXEL_FORMAT, SET_ENCODINGS, FB_UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT = 4, 5, 6
ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE, XVP, SET_DESKTOP_SIZE, QEMU = 150, 248, 250, 251, 255


class RFBError(Exception):
    """The browser sent something Airlock does not accept; str() says what."""


@dataclass(frozen=True)
class Key:
    down: bool
    keysym: int


@dataclass(frozen=True)
class Pointer:
    buttons: int
    x: int
    y: int


@dataclass(frozen=True)
class CutText:
    """Clipboard text from the browser; `allowed` False means it was dropped."""

    text: str
    size: int
    allowed: bool


@dataclass(frozen=True)
class Dropped:
    """A message parsed and not passed on (named for the input log)."""

    what: str


Event = Key | Pointer | CutText | Dropped


class ClientStream:
    """Incremental parser of one browser→Xvnc byte stream.

    `feed(data)` returns (bytes to pass to Xvnc, events seen). It buffers a
    partial message until the rest arrives, and never buffers more than one
    message (bounded by `max_cut_text`)."""

    def __init__(
        self,
        *,
        max_cut_text: int = 64 * 1024,
        allow_clipboard: bool = False,
        view_only: bool = False,
    ) -> None:
        self.max_cut_text = max_cut_text
        self.allow_clipboard = allow_clipboard
        self.view_only = view_only
        self.state = "version"
        self.buffer = bytearray()
        self.messages = 0
        self.bpp: int | None = None  # bits per pixel the display sends in

    def feed(self, data: bytes) -> tuple[bytes, list[Event]]:
        self.buffer += data
        out = bytearray()
        events: list[Event] = []
        while self.buffer:
            consumed = self._step(out, events)
            if consumed == 0:
                break
            del self.buffer[:consumed]
        if len(self.buffer) > max(self.max_cut_text, 4 + 4 * MAX_ENCODINGS) + 16:
            raise RFBError("a message from the browser is larger than Airlock accepts")
        return bytes(out), events

    # -- one message (or handshake step) at a time; 0 = need more bytes ---------

    def _step(self, out: bytearray, events: list[Event]) -> int:
        buf = self.buffer
        if self.state == "version":
            if len(buf) < 12:
                if not PROTOCOL_VERSION.startswith(bytes(buf)):
                    raise RFBError("the browser did not start an RFB 3.8 handshake")
                return 0
            if bytes(buf[:12]) != PROTOCOL_VERSION:
                raise RFBError("the browser asked for an RFB version other than 3.8")
            out += PROTOCOL_VERSION
            self.state = "security"
            return 12
        if self.state == "security":
            if buf[0] != SECURITY_NONE:
                raise RFBError(
                    "the browser chose a security type the private display does not offer"
                )
            out.append(SECURITY_NONE)
            self.state = "init"
            return 1
        if self.state == "init":
            out.append(1)  # always shared: see the module docstring
            self.state = "normal"
            return 1
        return self._message(out, events)

    def _message(self, out: bytearray, events: list[Event]) -> int:
        buf = self.buffer
        kind = buf[0]
        if kind == SET_PIXEL_FORMAT:
            if len(buf) < 20:
                return 0
            if buf[4] not in (8, 16, 32):
                raise RFBError("a pixel format with an invalid bits-per-pixel")
            self.bpp = buf[4]
            return self._fixed(20, out)
        if kind == SET_ENCODINGS:
            if len(buf) < 4:
                return 0
            count = struct.unpack_from(">H", buf, 2)[0]
            if count > MAX_ENCODINGS:
                raise RFBError(f"SetEncodings lists {count} encodings (at most {MAX_ENCODINGS})")
            size = 4 + 4 * count
            if len(buf) < size:
                return 0
            kept = [
                e
                for e in struct.unpack_from(f">{count}i", buf, 4)
                if e not in STRIPPED_ENCODINGS and e in ALLOWED_ENCODINGS
            ]
            out += struct.pack(f">BxH{len(kept)}i", SET_ENCODINGS, len(kept), *kept)
            return self._counted(size)
        if kind == FB_UPDATE_REQUEST:
            return self._fixed(10, out, check=lambda b: b[1] in (0, 1))
        if kind == KEY_EVENT:
            if len(buf) < 8:
                return 0
            down, keysym = buf[1], struct.unpack_from(">I", buf, 4)[0]
            if down not in (0, 1):
                raise RFBError("a key event has an invalid down flag")
            return self._input(8, out, events, Key(bool(down), keysym))
        if kind == POINTER_EVENT:
            if len(buf) < 6:
                return 0
            buttons, x, y = struct.unpack_from(">BHH", buf, 1)
            return self._input(6, out, events, Pointer(buttons, x, y))
        if kind == CLIENT_CUT_TEXT:
            return self._cut_text(out, events)
        if kind == ENABLE_CONTINUOUS_UPDATES:
            return self._fixed(10, out, check=lambda b: b[1] in (0, 1))
        if kind == CLIENT_FENCE:
            if len(buf) < 9:
                return 0
            length = buf[8]
            if length > MAX_FENCE_PAYLOAD:
                raise RFBError("a fence message carries more than 64 bytes")
            return self._fixed(9 + length, out)
        if kind == XVP:
            if len(buf) < 4:
                return 0
            events.append(Dropped("power request (XVP)"))
            return self._counted(4)
        if kind == SET_DESKTOP_SIZE:
            if len(buf) < 8:
                return 0
            screens = buf[6]
            if screens == 0 or screens > MAX_SCREENS:
                raise RFBError("a desktop size request names an invalid number of screens")
            size = 8 + 16 * screens
            if len(buf) < size:
                return 0
            events.append(Dropped("desktop resize"))
            return self._counted(size)
        if kind == QEMU:
            if len(buf) < 2:
                return 0
            if buf[1] != 0:
                raise RFBError(f"QEMU client message subtype {buf[1]} is not accepted")
            if len(buf) < 12:
                return 0
            down, keysym = struct.unpack_from(">HI", buf, 2)
            if down not in (0, 1):
                raise RFBError("a key event has an invalid down flag")
            return self._input(12, out, events, Key(bool(down), keysym))
        raise RFBError(f"the browser sent an unknown RFB message (type {kind})")

    def _fixed(self, size: int, out: bytearray, check=None) -> int:  # type: ignore[no-untyped-def]
        if len(self.buffer) < size:
            return 0
        chunk = bytes(self.buffer[:size])
        if check is not None and not check(chunk):
            raise RFBError(f"a malformed RFB message (type {chunk[0]})")
        out += chunk
        return self._counted(size)

    def _input(self, size: int, out: bytearray, events: list[Event], event: Event) -> int:
        if self.view_only:
            return self._counted(size)
        out += self.buffer[:size]
        events.append(event)
        return self._counted(size)

    def _cut_text(self, out: bytearray, events: list[Event]) -> int:
        buf = self.buffer
        if len(buf) < 8:
            return 0
        length = struct.unpack_from(">i", buf, 4)[0]
        if length < 0:
            raise RFBError("extended clipboard messages are not accepted")
        if length > self.max_cut_text:
            raise RFBError(
                f"a clipboard transfer of {length} bytes is over the limit of "
                f"{self.max_cut_text} bytes"
            )
        size = 8 + length
        if len(buf) < size:
            return 0
        # RFB clipboard text is Latin-1 by definition.
        text = bytes(buf[8:size]).decode("latin-1")
        if self.view_only:
            return self._counted(size)
        if self.allow_clipboard:
            out += buf[:size]
        events.append(CutText(text, length, self.allow_clipboard))
        return self._counted(size)

    def _counted(self, size: int) -> int:
        self.messages += 1
        return size


# --- the display's half: only as much as it takes to find clipboard text --------

# The encodings the browser may ask for: each rectangle's length is known
# without decoding it, so Airlock can follow the display's stream and see
# every clipboard message it sends (ServerCutText) — the device's copies
# reaching the vendor. Everything else the browser lists is dropped.
RAW, COPY_RECT, ZRLE = 0, 1, 16
CURSOR, DESKTOP_SIZE, LAST_RECT, DESKTOP_NAME, EXTENDED_DESKTOP_SIZE = -239, -223, -224, -307, -308
FENCE, CONTINUOUS_UPDATES, QEMU_KEY = -312, -313, -258
NO_DATA_PSEUDO = {DESKTOP_SIZE, FENCE, CONTINUOUS_UPDATES, QEMU_KEY}
LEVELS = set(range(-256, -246)) | set(range(-32, -22))  # compression / quality levels
ALLOWED_ENCODINGS = (
    {RAW, COPY_RECT, ZRLE, CURSOR, DESKTOP_SIZE, LAST_RECT, DESKTOP_NAME, EXTENDED_DESKTOP_SIZE}
    | NO_DATA_PSEUDO
    | LEVELS
)


@dataclass(frozen=True)
class ServerCutText:
    text: str
    size: int


class ServerStream:
    """Follows the display→browser stream (passed on unchanged) and reports
    ServerCutText. Rectangle payloads are skipped by length, never buffered.
    `bpp` follows the pixel format: ServerInit's, then the browser's
    SetPixelFormat (ClientStream.bpp)."""

    def __init__(self, client: ClientStream) -> None:
        self.client = client
        self.state = "version"
        self.buffer = bytearray()
        self.skip = 0
        self.rects = 0

    def feed(self, data: bytes) -> list[ServerCutText]:
        events: list[ServerCutText] = []
        pos, end = 0, len(data)
        while True:
            if self.skip:
                # Rectangle payload: dropped from the buffer, then from the data.
                n = min(self.skip, len(self.buffer))
                del self.buffer[:n]
                self.skip -= n
                n = min(self.skip, end - pos)
                pos += n
                self.skip -= n
                if self.skip:
                    break
            if pos < end:
                take = min(end - pos, 65536)
                self.buffer += data[pos : pos + take]
                pos += take
            if not self.buffer:
                break
            consumed = self._step(events)
            if consumed:
                del self.buffer[:consumed]
            elif pos >= end:
                break
            if len(self.buffer) > 1 << 21:
                raise RFBError("the display sent a message larger than Airlock follows")
        return events

    def _need(self, n: int) -> bool:
        return len(self.buffer) >= n

    def _step(self, events: list[ServerCutText]) -> int:
        buf = self.buffer
        if self.state == "version":
            if not self._need(12):
                return 0
            self.state = "security"
            return 12
        if self.state == "security":
            if not self._need(1) or not self._need(1 + buf[0]):
                return 0
            self.state = "result"
            return 1 + buf[0]
        if self.state == "result":
            if not self._need(4):
                return 0
            self.state = "init"
            return 4
        if self.state == "init":
            if not self._need(24):
                return 0
            size = 24 + struct.unpack_from(">I", buf, 20)[0]
            if not self._need(size):
                return 0
            if self.client.bpp is None:
                self.client.bpp = buf[4]
            self.state = "normal"
            return size
        if self.rects:
            return self._rect()
        kind = buf[0]
        if kind == 0:  # FramebufferUpdate
            if not self._need(4):
                return 0
            self.rects = struct.unpack_from(">H", buf, 2)[0]
            return 4
        if kind == 1:  # SetColourMapEntries
            if not self._need(6):
                return 0
            self.skip = 6 * struct.unpack_from(">H", buf, 4)[0]
            return 6
        if kind == 2 or kind == 150:  # Bell, EndOfContinuousUpdates
            return 1
        if kind == 3:  # ServerCutText
            if not self._need(8):
                return 0
            length = struct.unpack_from(">i", buf, 4)[0]
            if length < 0 or length > (1 << 20):
                raise RFBError("the display sent a clipboard message Airlock does not follow")
            if not self._need(8 + length):
                return 0
            events.append(ServerCutText(bytes(buf[8 : 8 + length]).decode("latin-1"), length))
            return 8 + length
        if kind == 248:  # ServerFence
            if not self._need(9) or not self._need(9 + buf[8]):
                return 0
            return 9 + buf[8]
        raise RFBError(f"the display sent an RFB message Airlock does not follow (type {kind})")

    def _rect(self) -> int:
        buf = self.buffer
        if not self._need(12):
            return 0
        x, y, w, h, encoding = struct.unpack_from(">HHHHi", buf, 0)
        bpp = (self.client.bpp or 32) // 8
        if encoding == LAST_RECT:
            self.rects = 0
            return 12
        self.rects -= 1
        if encoding == RAW:
            self.skip = w * h * bpp
        elif encoding == COPY_RECT:
            self.skip = 4
        elif encoding == CURSOR:
            self.skip = w * h * bpp + ((w + 7) // 8) * h
        elif encoding in NO_DATA_PSEUDO:
            pass
        elif encoding in (ZRLE, DESKTOP_NAME):
            if not self._need(16):
                self.rects += 1
                return 0
            self.skip = struct.unpack_from(">I", buf, 12)[0]
            return 16
        elif encoding == EXTENDED_DESKTOP_SIZE:
            if not self._need(16):
                self.rects += 1
                return 0
            self.skip = 16 * buf[12]
            return 16
        else:
            raise RFBError(f"the display used an encoding Airlock does not follow ({encoding})")
        return 12


# --- keysyms as text for the input log ----------------------------------------

KEY_NAMES = {
    0xFF08: "BackSpace",
    0xFF09: "Tab",
    0xFF0D: "Return",
    0xFF1B: "Escape",
    0xFFFF: "Delete",
    0xFF50: "Home",
    0xFF51: "Left",
    0xFF52: "Up",
    0xFF53: "Right",
    0xFF54: "Down",
    0xFF55: "Page_Up",
    0xFF56: "Page_Down",
    0xFF57: "End",
    0xFF63: "Insert",
    0xFF8D: "KP_Enter",
    0xFFE1: "Shift",
    0xFFE2: "Shift",
    0xFFE3: "Ctrl",
    0xFFE4: "Ctrl",
    0xFFE9: "Alt",
    0xFFEA: "Alt",
    0xFFE7: "Meta",
    0xFFE8: "Meta",
    0xFFEB: "Super",
    0xFFEC: "Super",
    0xFE03: "AltGr",
}
MODIFIERS = {"Shift", "Ctrl", "Alt", "Meta", "Super", "AltGr"}
# Bytes handed to the session core's line editor (sessions/live/recording.py), so
# typed lines are indexed like a terminal's.
EDITOR_BYTES = {
    "Return": b"\r",
    "KP_Enter": b"\r",
    "BackSpace": b"\x7f",
    "Tab": b"\t",
    "Escape": b"\x1b",
    "Left": b"\x1b[D",
    "Right": b"\x1b[C",
    "Home": b"\x1b[H",
    "End": b"\x1b[F",
    "Delete": b"\x1b[3~",
}


def keysym_text(keysym: int) -> str | None:
    """The character a keysym types, or None for a function key."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)
    if 0xFFB0 <= keysym <= 0xFFB9:  # keypad digits
        return chr(keysym - 0xFFB0 + 0x30)
    return None


def keysym_name(keysym: int) -> str:
    if keysym in KEY_NAMES:
        return KEY_NAMES[keysym]
    if 0xFFBE <= keysym <= 0xFFE0:
        return f"F{keysym - 0xFFBE + 1}"
    return f"0x{keysym:x}"


class KeyLog:
    """Turns key events into what the vendor typed: printable text as text,
    other keys as <Name>, chords as <Ctrl+c>. `feed()` returns (text for the
    input log, bytes for the line editor)."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def feed(self, event: Key) -> tuple[str, bytes]:
        name = KEY_NAMES.get(event.keysym)
        if name in MODIFIERS:
            if event.down:
                self.held.add(name)
            else:
                self.held.discard(name)
            return "", b""
        if not event.down:
            return "", b""
        chord = sorted(self.held - {"Shift", "AltGr"})
        text = keysym_text(event.keysym)
        if text is not None and not chord:
            return text, text.encode()
        label = keysym_name(event.keysym) if text is None else text
        if chord:
            if "Ctrl" in chord and text is not None and text.isalpha() and len(chord) == 1:
                # Ctrl+letter: the control byte, so Ctrl-U/Ctrl-W edit the line.
                return f"<Ctrl+{text}>", bytes([ord(text.lower()) & 0x1F])
            return f"<{'+'.join(chord + [label])}>", b""
        return f"<{label}>", EDITOR_BYTES.get(label, b"")


__all__ = [
    "ClientStream",
    "ServerStream",
    "ServerCutText",
    "RFBError",
    "Key",
    "Pointer",
    "CutText",
    "Dropped",
    "KeyLog",
    "keysym_text",
    "keysym_name",
    "PROTOCOL_VERSION",
]
