"""Evidence covers every artefact: the RDP input log next to a video is
hashed into the session row and the audit chain, and checked on playback,
on the review timeline, on export and by verifyevidence."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from broker import audit
from broker.models import AuditEvent
from sessions.doors.rdp.consumer import finish_input_log, input_log_name
from sessions.evidence import bundle as evidence
from sessions.live.core import close_session_row, open_session_row
from sessions.live.recording import AsciicastWriter, recordings_dir
from sessions.models import Session

pytestmark = pytest.mark.django_db

VIDEO = b"\x1aE\xdf\xa3 a video stand-in, bytes to hash"


def rdp_session(user, device, grant) -> Session:
    """A finished browser RDP session written the way the RDP door writes
    one: a video, an input log (asciicast), close_session_row, finish_input_log."""
    session = open_session_row(
        user=user,
        device=device,
        grant=grant,
        source_ip="192.0.2.9",
        client_kind="browser",
        protocol="rdp",
    )
    session.recording = session.recording.removesuffix(".cast") + ".webm"
    Session.objects.filter(pk=session.pk).update(recording=session.recording)
    video = recordings_dir() / session.recording
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(VIDEO)
    log = AsciicastWriter(
        recordings_dir() / input_log_name(session.recording), started=session.started_at.timestamp()
    )
    log.header(width=1024, height=768, title="rdp")
    log.input(b"shutdown /r", 1.0)
    log.marker("clipboard to device: 12 characters", 2.0)
    log.marker("clipboard to vendor blocked", 3.0)
    log_sha = log.close()
    close_session_row(
        session.pk,
        reason="the vendor disconnected",
        by=None,
        bytes_in=10,
        bytes_out=20,
        sha256=hashlib.sha256(VIDEO).hexdigest(),
    )
    finish_input_log(session.pk, log_sha)
    session.refresh_from_db()
    return session


def delete_input_lines(session: Session) -> None:
    """What the attacker did: drop the lines that show what was typed."""
    path = recordings_dir() / input_log_name(session.recording)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(
        b"".join(line for line in lines if b'"i"' not in line and b"blocked" not in line)
    )


@pytest.fixture
def session(make_vendor_user, make_device, make_grant):
    user = make_vendor_user("vendor-a")
    device = make_device("hmi-3")
    return rdp_session(user, device, make_grant(user, device))


@pytest.fixture
def auditor_client(make_user, verified_client):
    return verified_client(make_user("audra", is_auditor=True))


def verify_cli(data: bytes, tmp_path: Path, key: str | None = None) -> str:
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    out = io.StringIO()
    call_command(
        "verifyevidence",
        str(path),
        "--public-key",
        key or evidence.public_key_text(),
        stdout=out,
        stderr=out,
    )
    return out.getvalue()


def test_the_input_log_hash_is_on_the_row_and_in_the_audit_chain(session):
    log = (recordings_dir() / input_log_name(session.recording)).read_bytes()
    event = AuditEvent.objects.get(action="session.input_log", target=f"session {session.code}")
    assert session.artefacts == {"input_log": hashlib.sha256(log).hexdigest()}
    assert event.data["sha256"] == session.artefacts["input_log"]


def test_an_untouched_rdp_session_plays_shows_its_timeline_and_exports(
    session, auditor_client, tmp_path
):
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "Integrity verified" in page
    assert "clipboard to vendor blocked" in page
    assert auditor_client.get(reverse("session-recording", args=[session.code])).status_code == 200
    export = auditor_client.get(reverse("session-evidence", args=[session.code]))
    assert export.status_code == 200
    assert "Verified" in verify_cli(export.content, tmp_path)


def test_deleted_input_log_lines_are_refused_on_review_playback_and_export(session, auditor_client):
    delete_input_lines(session)
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "Tamper warning" in page and "Integrity verified" not in page
    assert "input log does not match the SHA-256 on the session row" in page
    assert auditor_client.get(reverse("session-recording", args=[session.code])).status_code == 409
    assert auditor_client.get(reverse("session-evidence", args=[session.code])).status_code == 409


def test_deleted_input_log_lines_are_not_shown_on_the_timeline(session, auditor_client):
    from sessions.evidence.review import timeline

    delete_input_lines(session)
    items = timeline(session)
    assert [i["kind"] for i in items] == ["tamper"]
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "Input log not shown" in page


def test_a_missing_input_log_is_refused(session, auditor_client):
    (recordings_dir() / input_log_name(session.recording)).unlink()
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "input log is missing" in page
    assert auditor_client.get(reverse("session-recording", args=[session.code])).status_code == 409


def test_an_input_log_hash_changed_on_the_row_is_refused(session, auditor_client):
    delete_input_lines(session)
    log = (recordings_dir() / input_log_name(session.recording)).read_bytes()
    Session.objects.filter(pk=session.pk).update(
        artefacts={"input_log": hashlib.sha256(log).hexdigest()}
    )
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "input log SHA-256 on the row differs from the audit chain" in page
    assert auditor_client.get(reverse("session-evidence", args=[session.code])).status_code == 409


def test_an_input_log_hash_changed_on_row_and_chain_event_is_refused(session, auditor_client):
    delete_input_lines(session)
    sha = hashlib.sha256((recordings_dir() / input_log_name(session.recording)).read_bytes())
    Session.objects.filter(pk=session.pk).update(artefacts={"input_log": sha.hexdigest()})
    event = AuditEvent.objects.get(action="session.input_log", target=f"session {session.code}")
    # Audit events are append-only in the ORM; an attacker with the database writes SQL.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {AuditEvent._meta.db_table} SET data = %s WHERE id = %s",
            [json.dumps({**event.data, "sha256": sha.hexdigest()}), event.pk],
        )
    page = auditor_client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "the audit event that recorded the input log SHA-256 was altered" in page
    assert auditor_client.get(reverse("session-evidence", args=[session.code])).status_code == 409


def rebuild(data: bytes, change, key: Ed25519PrivateKey) -> bytes:
    """The bundle with members changed by change(members), the manifest
    recomputed and signed by `key`, the way evidence.build writes it."""
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {
        n: src.read(n) for n in src.namelist() if n not in (evidence.MANIFEST, evidence.SIGNATURE)
    }
    change(members)
    manifest = json.loads(src.read(evidence.MANIFEST))
    manifest["public_key"] = evidence.public_key_text(key.public_key())
    manifest["members"] = {
        n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in members.items()
    }
    manifest_bytes = evidence._json(manifest)
    sig = evidence._json(
        {
            "algorithm": "ed25519",
            "signs": evidence.MANIFEST,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "public_key_fingerprint": evidence.public_key_fingerprint(key.public_key()),
            "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
        }
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
        zf.writestr(evidence.MANIFEST, manifest_bytes)
        zf.writestr(evidence.SIGNATURE, sig)
    return out.getvalue()


def drop_input_lines(members: dict[str, bytes]) -> None:
    lines = members["input_log.cast"].splitlines(keepends=True)
    members["input_log.cast"] = b"".join(line for line in lines if b'"i"' not in line)


def test_a_signed_bundle_whose_input_log_differs_from_the_chain_does_not_verify(
    session, auditor_client, tmp_path
):
    # Signed by the deployment's own key (as an export of a tampered store
    # would have been before the input log was checked): the cross-checks
    # against session.json and the audit chain refuse it.
    export = auditor_client.get(reverse("session-evidence", args=[session.code])).content
    forged = rebuild(export, drop_input_lines, evidence.signing_key())
    report = evidence.verify(forged, evidence.signing_key().public_key())
    assert ("input_log.cast", "does not hash to the input log SHA-256 in session.json") in (
        report.problems
    )
    assert (
        "input_log.cast",
        "does not hash to the input log SHA-256 in the audit chain",
    ) in report.problems
    with pytest.raises(CommandError):
        verify_cli(forged, tmp_path)


def make_self_consistent(members: dict[str, bytes]) -> None:
    """Drop the typed lines and recompute every hash that names them:
    session.json's artefacts, the input-log audit event and the chain after it."""
    drop_input_lines(members)
    sha = hashlib.sha256(members["input_log.cast"]).hexdigest()
    meta = json.loads(members["session.json"])
    meta["artefacts"] = {"input_log": sha}
    members["session.json"] = evidence._json(meta)
    events = json.loads(members["audit_events.json"])
    prev = None
    for event in events:
        if event["action"] == "session.input_log":
            event["data"]["sha256"] = sha
        if prev is not None:
            event["prev_hash"] = prev
        event["hash"] = audit.compute_hash(
            event["prev_hash"],
            datetime.fromisoformat(event["at"]),
            event["actor"],
            event["action"],
            event["target"],
            event["source_ip"],
            event["data"],
        )
        prev = event["hash"]
    members["audit_events.json"] = evidence._json(events)


def test_a_forged_self_consistent_bundle_is_refused_only_by_the_signature(
    session, auditor_client, tmp_path
):
    export = auditor_client.get(reverse("session-evidence", args=[session.code])).content
    forger = Ed25519PrivateKey.generate()
    forged = rebuild(export, make_self_consistent, forger)
    # Everything inside is consistent: with the forger's own key it verifies...
    assert evidence.verify(forged, forger.public_key()).ok
    # ...so only the deployment's signature tells it apart.
    report = evidence.verify(forged, evidence.signing_key().public_key())
    assert [member for member, _ in report.problems] == [evidence.SIGNATURE]
    with pytest.raises(CommandError, match="does NOT verify"):
        verify_cli(forged, tmp_path)
