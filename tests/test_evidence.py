"""Signed evidence bundles: export from the portal, verify offline with only
the public key, and name exactly the member that was changed."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.urls import reverse

from broker.models import AuditEvent
from sessions.evidence import bundle as evidence
from sessions.live.recording import recordings_dir
from tests.support.recordings import recorded_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(make_vendor_user, make_device, make_grant):
    user = make_vendor_user("vendor-a")
    device = make_device("plc-7")
    grant = make_grant(user, device)
    return recorded_session(
        user,
        device,
        grant,
        lines=("echo hello-airlock", "status"),
        files=(("/plc/config.xml", "download"),),
    )


@pytest.fixture
def bundle(session) -> bytes:
    from sessions.evidence.review import read_recording

    return evidence.build(session, read_recording(session))


def verify_cli(path: Path, key: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("verifyevidence", str(path), "--public-key", key, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rewrite(data: bytes, member: str, change) -> bytes:
    """The same zip with `member`'s content passed through change()."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info.filename, change(body) if info.filename == member else body)
    return out.getvalue()


def flip_one_byte(body: bytes) -> bytes:
    i = len(body) // 2
    # Keep the byte printable so JSON members stay parseable and only the
    # content check can tell.
    replacement = b"X" if body[i : i + 1] != b"X" else b"Y"
    return body[:i] + replacement + body[i + 1 :]


MEMBERS = [
    "recording.cast",
    "session.json",
    "commands.json",
    "file_transfers.json",
    "signals.json",
    "audit_events.json",
    "manifest.json",
    "manifest.sig",
]


def test_bundle_holds_every_member_and_a_manifest_of_their_hashes(bundle, session):
    zf = zipfile.ZipFile(io.BytesIO(bundle))
    assert sorted(zf.namelist()) == sorted(MEMBERS)
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["session"] == str(session.code)
    assert set(manifest["members"]) == set(MEMBERS) - {"manifest.json", "manifest.sig"}
    meta = json.loads(zf.read("session.json"))
    assert meta["recording_sha256"] == session.recording_sha256
    events = json.loads(zf.read("audit_events.json"))
    assert [e["action"] for e in events][0] == "session.start"
    assert "session.end" in [e["action"] for e in events]
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in events)
    assert json.loads(zf.read("commands.json"))[0]["text"] == "echo hello-airlock"
    assert json.loads(zf.read("file_transfers.json"))[0]["path"] == "/plc/config.xml"


def test_untouched_bundle_verifies_with_only_the_public_key(bundle, tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle)
    out, _ = verify_cli(path, evidence.public_key_text())
    assert "Verified" in out
    for member in MEMBERS:
        assert f"ok {member}" in out


def test_public_key_can_be_given_as_a_file_or_as_pem(bundle, tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle)
    key_file = tmp_path / "airlock.pub"
    key_file.write_text(evidence.public_key_text() + "\n")
    assert "Verified" in verify_cli(path, str(key_file))[0]
    pem = (
        evidence.signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    pem_file = tmp_path / "airlock.pem"
    pem_file.write_text(pem)
    assert "Verified" in verify_cli(path, str(pem_file))[0]


@pytest.mark.parametrize("member", MEMBERS)
def test_one_changed_byte_in_any_member_is_rejected_naming_it(bundle, tmp_path, capsys, member):
    path = tmp_path / "bundle.zip"
    path.write_bytes(rewrite(bundle, member, flip_one_byte))
    err = io.StringIO()
    with pytest.raises(CommandError, match="does NOT verify"):
        call_command(
            "verifyevidence",
            str(path),
            "--public-key",
            evidence.public_key_text(),
            stdout=io.StringIO(),
            stderr=err,
        )
    report = err.getvalue()
    assert f"MISMATCH {member}:" in report
    # Exactly the changed member is named (nothing else is blamed).
    named = {line.split(":")[0].removeprefix("MISMATCH ") for line in report.splitlines()}
    assert named == {member}


def test_a_changed_byte_in_the_zip_itself_is_reported(bundle, tmp_path):
    data = bytearray(bundle)
    zf = zipfile.ZipFile(io.BytesIO(bundle))
    info = zf.getinfo("recording.cast")
    # Inside the compressed data of recording.cast (after its local header).
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    data[offset] ^= 0x01
    path = tmp_path / "bundle.zip"
    path.write_bytes(bytes(data))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command(
            "verifyevidence",
            str(path),
            "--public-key",
            evidence.public_key_text(),
            stdout=io.StringIO(),
            stderr=err,
        )
    assert "recording.cast" in err.getvalue()


def test_added_member_is_rejected(bundle, tmp_path):
    out = io.BytesIO(bundle)
    with zipfile.ZipFile(out, "a") as zf:
        zf.writestr("extra.txt", b"planted")
    path = tmp_path / "bundle.zip"
    path.write_bytes(out.getvalue())
    report = evidence.verify(path.read_bytes(), evidence.signing_key().public_key())
    assert report.problems == [
        ("extra.txt", "is in the bundle but not in the signed manifest (added)")
    ]


def test_bundle_signed_by_another_deployment_does_not_verify(bundle, tmp_path):
    other = Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command(
            "verifyevidence",
            str(path),
            "--public-key",
            evidence.public_key_text(other),
            stdout=io.StringIO(),
            stderr=err,
        )
    assert "manifest.sig" in err.getvalue()


def test_bad_public_key_and_missing_bundle_are_clear_errors(tmp_path):
    with pytest.raises(CommandError, match="--public-key"):
        call_command("verifyevidence", str(tmp_path / "x.zip"), "--public-key", "not-a-key")
    with pytest.raises(CommandError, match="cannot read"):
        call_command(
            "verifyevidence",
            str(tmp_path / "missing.zip"),
            "--public-key",
            evidence.public_key_text(),
        )


def test_not_a_zip_is_rejected(tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"this is not a zip")
    report = evidence.verify(path.read_bytes(), evidence.signing_key().public_key())
    assert report.problems == [("(bundle)", "is not a zip file")]


# --- export from the portal ----------------------------------------------------------


def test_auditor_exports_a_bundle_that_verifies_and_the_export_is_audited(
    session, make_user, verified_client, tmp_path
):
    auditor = make_user("audrey", is_auditor=True)
    client = verified_client(auditor)
    response = client.get(reverse("session-evidence", args=[session.code]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    path = tmp_path / "export.zip"
    path.write_bytes(response.content)
    assert "Verified" in verify_cli(path, evidence.public_key_text())[0]
    assert AuditEvent.objects.filter(
        action="session.evidence_exported", target=f"session {session.code}", actor="audrey"
    ).exists()


def test_vendor_cannot_export_evidence(session, verified_client):
    client = verified_client(session.user)
    assert client.get(reverse("session-evidence", args=[session.code])).status_code == 403


def test_tampered_recording_is_not_signed(session, make_user, verified_client):
    path = recordings_dir() / session.recording
    path.write_bytes(path.read_bytes().replace(b"hello-airlock", b"hello-airlocK"))
    client = verified_client(make_user("audrey", is_auditor=True))
    response = client.get(reverse("session-evidence", args=[session.code]))
    assert response.status_code == 409
    assert b"tampered" in response.content


def test_public_key_is_shown_in_the_portal(session, make_user, verified_client):
    client = verified_client(make_user("audrey", is_auditor=True))
    page = client.get(reverse("session-list")).content.decode()
    assert evidence.public_key_text() in page
    assert evidence.public_key_fingerprint() in page
    plain = client.get(reverse("evidence-key"))
    assert plain.content.decode().strip() == evidence.public_key_text()


def test_signing_key_is_generated_private_into_var(settings):
    import stat

    path = Path(settings.VAR_DIR) / "signing_key"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.SIGNING_KEY not in evidence.public_key_text()


def test_rdp_bundle_carries_the_video_and_the_input_log(session):
    import hashlib

    session.recording = session.recording.removesuffix(".cast") + ".webm"
    session.recording_sha256 = hashlib.sha256(b"webm bytes").hexdigest()
    data = evidence.build(session, b"webm bytes", input_log=b'{"version": 2}\n[0.5, "i", "x"]\n')
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "recording.webm" in names and "input_log.cast" in names
    key = evidence.signing_key().public_key()
    # Every member matches the signed manifest (the fixture's audit chain
    # still names the .cast it really recorded, which the cross-check sees).
    report = evidence.verify(data, key)
    assert {"recording.webm", "input_log.cast"} <= set(report.checked)
    # The input log is checked like the recording: this one is on neither
    # the session row nor the audit chain.
    assert report.problems == [
        ("input_log.cast", "does not hash to the input log SHA-256 in session.json"),
        ("input_log.cast", "does not hash to the input log SHA-256 in the audit chain"),
        ("session.json", "its recording SHA-256 differs from the audit chain's"),
    ]
    changed = rewrite(data, "input_log.cast", flip_one_byte)
    assert (
        "input_log.cast",
        "does not match its SHA-256 in the signed manifest (changed)",
    ) in evidence.verify(changed, key).problems
