"""Session recordings (asciicast v2) and the command index.

A recording is evidence, so it is written as the session runs: events are
buffered in memory and flushed to the file at least once a second (and
whenever the buffer passes FLUSH_BYTES), so a killed gateway loses at most
the last second. The SHA-256 is computed over exactly the bytes written; on
close it goes into the Session row and the audit chain (sessions/live/core.py).
A write that fails raises RecordingError and the session core ends the
session: no recording, no session (fail closed).

`LineEditor` rebuilds the lines a vendor typed from raw keystrokes the way a
shell's line editor would (backspace, Ctrl-U, Ctrl-W, Ctrl-A/E, arrows,
history recall, bracketed paste), so the index holds `rm -rf /tmp/x` and not
the keystrokes that produced it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from json.encoder import encode_basestring  # the C escaper json.dumps uses
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

FLUSH_BYTES = 256 * 1024
# Written but not yet on disk, per recording. Past this the relay waits for
# the disk (backpressure) instead of buffering a fast session in memory.
MAX_PENDING_BYTES = 8 * 1024 * 1024
# Bytes that need no JSON escaping beyond \\, \", \n, \r and \t.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\n\r\t\x7f"
_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _disk_writer() -> ThreadPoolExecutor:
    """One thread per process writes and hashes every recording, in order.
    os.write and hashlib release the GIL, so this runs beside the relay."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airlock-recording")
        return _writer


def json_string(data: bytes) -> bytes | None:
    """`data` as a JSON string literal (with quotes) when it is plain ASCII
    text, escaped with bytes operations; None when it needs decoding."""
    if data.translate(None, _PLAIN):
        return None
    for raw, escaped in (
        (b"\\", b"\\\\"),
        (b'"', b'\\"'),
        (b"\n", b"\\n"),
        (b"\r", b"\\r"),
        (b"\t", b"\\t"),
    ):
        if raw in data:
            data = data.replace(raw, escaped)
    return b'"' + data + b'"'


# One asciicast event holds at most this much data; larger chunks are split
# so a player never has to parse a multi-megabyte JSON line.
MAX_EVENT_BYTES = 64 * 1024


class RecordingError(Exception):
    """The recording could not be written; the session must end."""


def recordings_dir() -> Path:
    return Path(getattr(settings, "RECORDINGS_DIR", Path(settings.VAR_DIR) / "recordings"))


def recordings_storage() -> Storage:
    """The Django storage that keeps finished recordings (settings.STORAGES
    ["recordings"]). A FileSystemStorage without a location is the local
    spool itself, so the default moves nothing."""
    config = getattr(settings, "STORAGES", {}).get("recordings")
    if config is None or (
        config.get("BACKEND") == "django.core.files.storage.FileSystemStorage"
        and not (config.get("OPTIONS") or {}).get("location")
    ):
        return FileSystemStorage(location=str(recordings_dir()))
    return storages["recordings"]


def store_finished(name: str) -> None:
    """Move a closed recording from the local spool into the recordings
    storage (nothing to do when that storage is the spool). The spool copy
    is removed only once the storage holds the same bytes under `name`."""
    storage = recordings_storage()
    spool = recordings_dir() / name
    if (
        isinstance(storage, FileSystemStorage)
        and Path(storage.path(name)).resolve() == spool.resolve()
    ):
        return
    with open(spool, "rb") as fh:
        saved = storage.save(name, File(fh, name=name))
    if saved != name:
        raise RecordingError(f"the recordings storage kept {name} as {saved}")
    spool.unlink()


def recording_name(code: str, at: datetime) -> str:
    """Where a session's recording lives inside the recordings store."""
    return f"{at:%Y/%m/%d}/{code}.cast"


class AsciicastWriter:
    """Incremental asciicast v2 writer: a header line, then one JSON array per
    event: [seconds, "o"|"i"|"r", data]."""

    def __init__(self, path: Path, *, started: float | None = None) -> None:
        self.path = path
        self.started = started if started is not None else time.time()
        self._mono0 = time.monotonic() - (time.time() - self.started)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._hash = hashlib.sha256()
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")("replace"),
            "i": codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._fd: int | None = None
        self._pending: list[Future] = []
        self._pending_bytes = 0
        self._error: str = ""
        self._header_written = False
        self.closed = False
        self.bytes_written = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: a recording is never overwritten; 0600: it may hold secrets typed.
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise RecordingError(f"cannot create the recording: {exc.strerror}") from exc

    def elapsed(self) -> float:
        return max(0.0, time.monotonic() - self._mono0)

    def header(
        self,
        *,
        width: int,
        height: int,
        title: str = "",
        env: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self._header_written:
            return
        head: dict[str, Any] = {
            "version": 2,
            "width": max(1, width),
            "height": max(1, height),
            "timestamp": int(self.started),
        }
        if title:
            head["title"] = title
        if env:
            head["env"] = env
        if extra:
            head.update(extra)
        self._header_written = True
        self._append(json.dumps(head, ensure_ascii=False).encode() + b"\n")

    def _event(self, kind: str, text: str, t: float | None) -> None:
        if not self._header_written:
            self.header(width=80, height=24)
        at = self.elapsed() if t is None else t
        self._append(json.dumps([round(at, 6), kind, text], ensure_ascii=False).encode() + b"\n")

    def output(self, data: bytes, t: float | None = None) -> None:
        self._data("o", data, t)

    def input(self, data: bytes, t: float | None = None) -> None:
        self._data("i", data, t)

    def _data(self, kind: str, data: bytes, t: float | None) -> None:
        decoder = self._decoders[kind]
        for start in range(0, len(data), MAX_EVENT_BYTES):
            part = data[start : start + MAX_EVENT_BYTES]
            # Fast path for plain text (bulk output): no decode, bytes escaping.
            literal = json_string(part) if not decoder.getstate()[0] else None
            if literal is None:
                text = decoder.decode(part)
                if not text:
                    continue
                literal = encode_basestring(text).encode()
            if not self._header_written:
                self.header(width=80, height=24)
            at = self.elapsed() if t is None else t
            self._append(b'[%.6f, "%s", %s]\n' % (at, kind.encode(), literal))

    def resize(self, width: int, height: int, t: float | None = None) -> None:
        self._event("r", f"{int(width)}x{int(height)}", t)

    def marker(self, label: str, t: float | None = None) -> None:
        """An asciicast v2 marker ("m"): a labelled point in time (browser RDP
        logs clicks and clipboard transfers this way)."""
        self._event("m", label, t)

    def _append(self, line: bytes) -> None:
        if self.closed:
            raise RecordingError("the recording is closed")
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what is buffered to the disk writer. Called by the session
        core every second; raises RecordingError if an earlier write failed."""
        self._reap()
        if not self._buffer or self._fd is None:
            return
        chunk = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._pending.append(_disk_writer().submit(self._write, chunk))
        self._pending_bytes += len(chunk)
        while self._pending_bytes > MAX_PENDING_BYTES and self._pending:
            self._pending[0].result()  # backpressure: wait for the disk
            self._reap()

    def wait(self) -> None:
        """Block until everything flushed is on disk (or raise)."""
        for future in list(self._pending):
            future.result()
        self._reap()

    def _reap(self) -> None:
        done = [f for f in self._pending if f.done()]
        for future in done:
            self._pending.remove(future)
            self._pending_bytes -= future.result()
        if self._error:
            self._abandon()
            raise RecordingError(self._error)

    def _write(self, chunk: bytes) -> int:
        """In the writer thread: append and hash, in submission order."""
        if self._error or self._fd is None:
            return len(chunk)
        try:
            view = memoryview(chunk)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self._error = f"cannot write the recording: {exc.strerror}"
            return len(chunk)
        self._hash.update(chunk)
        self.bytes_written += len(chunk)
        return len(chunk)

    def close(self) -> str:
        """Flush, fsync and close; return the SHA-256 of the whole file."""
        if self.closed:
            return self._hash.hexdigest()
        if not self._header_written:
            self.header(width=80, height=24)
        try:
            self.flush()
            self.wait()
            if self._fd is not None:
                os.fsync(self._fd)
        finally:
            self._abandon()
        return self._hash.hexdigest()

    def _abandon(self) -> None:
        self.closed = True
        # Never close the descriptor under a write in flight: its number could
        # be reused by another file before the writer thread gets to it.
        for future in self._pending:
            future.exception()
        self._pending.clear()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- command index ------------------------------------------------------------

MAX_LINE = 4096
MAX_HISTORY = 200


class LineEditor:
    """Reconstructs typed lines from raw terminal input.

    feed() returns the lines completed by this chunk. It models a readline-
    style editor: the cursor moves with arrows/Ctrl-A/Ctrl-E, deletions
    apply at the cursor, Up/Down recall earlier lines this editor saw.
    Whatever the device's shell really does, the raw input stays in the
    recording; this index is for search."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.cursor = 0
        self.history: list[str] = []
        self._history_pos = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""
        self._pasting = False

    def feed(self, data: bytes) -> list[str]:
        done: list[str] = []
        for ch in self._decoder.decode(data):
            line = self._char(ch)
            if line is not None:
                done.append(line)
        return done

    def _char(self, ch: str) -> str | None:
        if self._escape:
            self._escape += ch
            return self._sequence()
        if ch == "\x1b":
            self._escape = ch
            return None
        if self._pasting:
            if ch not in "\r\n":
                self._insert(ch)
                return None
        if ch in "\r\n":
            return self._enter()
        if ch in "\x7f\x08":
            if self.cursor > 0:
                del self.buffer[self.cursor - 1]
                self.cursor -= 1
        elif ch == "\x15":  # Ctrl-U: kill to start of line
            del self.buffer[: self.cursor]
            self.cursor = 0
        elif ch == "\x17":  # Ctrl-W: kill the word before the cursor
            start = self.cursor
            while start > 0 and self.buffer[start - 1] == " ":
                start -= 1
            while start > 0 and self.buffer[start - 1] != " ":
                start -= 1
            del self.buffer[start : self.cursor]
            self.cursor = start
        elif ch == "\x0b":  # Ctrl-K: kill to end of line
            del self.buffer[self.cursor :]
        elif ch == "\x01":
            self.cursor = 0
        elif ch == "\x05":
            self.cursor = len(self.buffer)
        elif ch == "\x02":
            self.cursor = max(0, self.cursor - 1)
        elif ch == "\x06":
            self.cursor = min(len(self.buffer), self.cursor + 1)
        elif ch == "\x04":  # Ctrl-D deletes under the cursor (EOF on an empty line)
            if self.cursor < len(self.buffer):
                del self.buffer[self.cursor]
        elif ch in "\x03\x07":  # Ctrl-C / Ctrl-G abandon the line
            self._reset()
        elif ch == "\t" or ch >= " ":
            self._insert(ch)
        return None

    def _insert(self, ch: str) -> None:
        if len(self.buffer) < MAX_LINE:
            self.buffer.insert(self.cursor, ch)
            self.cursor += 1

    def _sequence(self) -> str | None:
        seq = self._escape
        if len(seq) == 2 and seq[1] not in "[O":
            self._escape = ""  # Alt+key: ignored
            return None
        if len(seq) < 3:
            return None
        last = seq[-1]
        if not ("@" <= last <= "~") and len(seq) < 16:
            return None  # parameters still arriving
        self._escape = ""
        body = seq[2:]
        if body in ("D",):
            self.cursor = max(0, self.cursor - 1)
        elif body in ("C",):
            self.cursor = min(len(self.buffer), self.cursor + 1)
        elif body in ("H", "1~", "7~"):
            self.cursor = 0
        elif body in ("F", "4~", "8~"):
            self.cursor = len(self.buffer)
        elif body == "3~":
            if self.cursor < len(self.buffer):
                del self.buffer[self.cursor]
        elif body == "A":
            self._recall(-1)
        elif body == "B":
            self._recall(+1)
        elif body == "200~":
            self._pasting = True
        elif body == "201~":
            self._pasting = False
        return None

    def _recall(self, step: int) -> None:
        if not self.history:
            return
        self._history_pos = min(len(self.history), max(0, self._history_pos + step))
        text = self.history[self._history_pos] if self._history_pos < len(self.history) else ""
        self.buffer = list(text)
        self.cursor = len(self.buffer)

    def _enter(self) -> str | None:
        text = "".join(self.buffer).strip()
        self._reset()
        if not text:
            return None
        self.history.append(text)
        del self.history[:-MAX_HISTORY]
        self._history_pos = len(self.history)
        return text

    def _reset(self) -> None:
        self.buffer = []
        self.cursor = 0
        self._history_pos = len(self.history)
