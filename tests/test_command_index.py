"""The command index rebuilds typed lines from raw keystrokes."""

from __future__ import annotations

from sessions.live.recording import MAX_LINE, LineEditor


def typed(*chunks: bytes) -> list[str]:
    editor = LineEditor()
    lines: list[str] = []
    for chunk in chunks:
        lines += editor.feed(chunk)
    return lines


def test_plain_line_is_indexed_on_enter():
    assert typed(b"ls -l\r") == ["ls -l"]


def test_backspace_removes_the_character_before_the_cursor():
    assert typed(b"cat /etc/passwdd\x7f\r") == ["cat /etc/passwd"]
    assert typed(b"lss\x08\r") == ["ls"]


def test_ctrl_u_kills_the_line_typed_so_far():
    assert typed(b"rm -rf /\x15echo safe\r") == ["echo safe"]


def test_ctrl_w_kills_the_word_before_the_cursor():
    assert typed(b"systemctl stop plc \x17restart-not\x17status plc\r") == [
        "systemctl stop status plc"
    ]


def test_left_arrow_then_typing_inserts_in_the_middle():
    assert typed(b"echo wrld\x1b[D\x1b[D\x1b[Do\r") == ["echo world"]


def test_home_and_end_keys_move_the_cursor():
    assert typed(b"ho hi\x1b[Hec\x1b[F!\r") == ["echo hi!"]
    assert typed(b"ho hi\x01ec\x05!\r") == ["echo hi!"]


def test_delete_key_removes_under_the_cursor():
    assert typed(b"echoo\x1b[D\x1b[3~ x\r") == ["echo x"]


def test_up_arrow_recalls_the_previous_line():
    assert typed(b"uptime\r", b"\x1b[A\r") == ["uptime", "uptime"]
    assert typed(b"one\r", b"two\r", b"\x1b[A\x1b[A\x1b[B\r") == ["one", "two", "two"]


def test_ctrl_c_abandons_the_line():
    assert typed(b"shutdown now\x03", b"date\r") == ["date"]


def test_escape_sequences_split_across_chunks_are_understood():
    assert typed(b"abc\x1b", b"[", b"D", b"X\r") == ["abXc"]


def test_bracketed_paste_keeps_pasted_text_on_the_line():
    assert typed(b"echo \x1b[200~pasted text\x1b[201~\r") == ["echo pasted text"]


def test_utf8_split_across_chunks_is_kept():
    snowman = "echo ☃".encode()
    assert typed(snowman[:-1], snowman[-1:] + b"\r") == ["echo ☃"]


def test_empty_lines_are_not_indexed():
    assert typed(b"\r\r   \r") == []


def test_a_very_long_line_is_bounded():
    lines = typed(b"x" * (MAX_LINE * 4) + b"\r")
    assert len(lines[0]) == MAX_LINE


def test_alt_key_sequences_are_ignored():
    assert typed(b"ls\x1bb\r") == ["ls"]
