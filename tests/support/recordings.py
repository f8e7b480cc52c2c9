"""Finished sessions with real recordings, made the way the session core
makes them (open_session_row, the asciicast writer, the command index,
close_session_row into the audit chain) but without a network, for the
review, evidence and retention tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from sessions.live.core import close_session_row, open_session_row, record_command, record_file
from sessions.live.recording import AsciicastWriter, recordings_dir
from sessions.models import Session


def recorded_session(
    user: Any,
    device: Any,
    grant: Any,
    *,
    lines: tuple[str, ...] = ("echo hello-airlock",),
    files: tuple[tuple[str, str], ...] = (),
    reason: str = "the vendor disconnected",
    client_kind: str = "browser",
    ended_days_ago: float = 0,
) -> Session:
    session = open_session_row(
        user=user, device=device, grant=grant, source_ip="192.0.2.7", client_kind=client_kind
    )
    writer = AsciicastWriter(
        recordings_dir() / session.recording, started=session.started_at.timestamp()
    )
    writer.header(width=100, height=30, title=f"{user.username} on {device.slug}")
    t = 0.5
    writer.output(b"plc> ", t)
    for line in lines:
        for ch in line + "\r":
            t += 0.05
            writer.input(ch.encode(), t)
            writer.output(ch.encode() if ch != "\r" else b"\r\n", t)
        record_command(session.pk, t, line, "line")
        out = line.removeprefix("echo ").encode() if line.startswith("echo ") else b"ok"
        t += 0.2
        writer.output(out + b"\r\nplc> ", t)
        t += 1.0
    for path, direction in files:
        record_file(
            session.pk,
            path=path,
            direction=direction,
            size=1234,
            sha256="ab" * 32,
            allowed=True,
            actor=user.username,
            source_ip="192.0.2.7",
        )
    sha = writer.close()
    close_session_row(
        session.pk,
        reason=reason,
        by=None,
        bytes_in=len(lines) * 10,
        bytes_out=len(lines) * 20,
        sha256=sha,
    )
    session.refresh_from_db()
    if ended_days_ago:
        ended = timezone.now() - timedelta(days=ended_days_ago)
        Session.objects.filter(pk=session.pk).update(
            started_at=ended - timedelta(minutes=5), ended_at=ended
        )
        session.refresh_from_db()
    return session
