"""The Session row: closed once, seen only by who may see it."""

from __future__ import annotations

from sessions.live.core import close_session_row, open_session_row, record_command
from sessions.models import Session


def _session(user, device, grant) -> Session:
    return open_session_row(
        user=user,
        device=device,
        grant=grant,
        source_ip="192.0.2.7",
        client_kind=Session.ClientKind.NATIVE,
    )


def test_a_session_is_closed_exactly_once(make_vendor_user, make_device, make_grant):
    user, device = make_vendor_user(), make_device()
    session = _session(user, device, make_grant(user, device))
    assert close_session_row(
        session.pk,
        reason="the vendor disconnected",
        by=None,
        bytes_in=3,
        bytes_out=5,
        sha256="ab" * 32,
    )
    assert not close_session_row(
        session.pk, reason="revoked", by="approver", bytes_in=0, bytes_out=0, sha256=""
    )
    session.refresh_from_db()
    assert session.end_reason == "the vendor disconnected"
    assert (session.bytes_in, session.bytes_out, session.recording_sha256) == (3, 5, "ab" * 32)


def test_opening_a_session_names_its_recording_and_audits_the_start(
    make_vendor_user, make_device, make_grant
):
    from broker.models import AuditEvent

    user, device = make_vendor_user(), make_device()
    session = _session(user, device, make_grant(user, device))
    assert session.recording.endswith(f"{session.code}.cast")
    assert AuditEvent.objects.filter(
        action="session.start", target=f"session {session.code}"
    ).exists()


def test_group_names_address_the_session_its_user_vendor_device_and_grant(
    make_vendor_user, make_device, make_grant
):
    user, device = make_vendor_user(), make_device()
    grant = make_grant(user, device)
    session = _session(user, device, grant)
    assert set(session.group_names()) == {
        f"airlock.session.{session.code}",
        f"airlock.user.{user.code}",
        f"airlock.vendor.{user.vendor.code}",
        f"airlock.device.{device.code}",
        f"airlock.grant.{grant.code}",
    }


def test_vendors_see_only_their_own_companys_sessions(make_vendor_user, make_device, make_grant):
    alice, mallory = make_vendor_user("alice"), make_vendor_user("mallory")
    device = make_device()
    mine = _session(alice, device, make_grant(alice, device))
    _session(mallory, device, make_grant(mallory, device))
    assert list(Session.objects.visible_to(alice)) == [mine]


def test_commands_keep_their_time_offset_and_kind(make_vendor_user, make_device, make_grant):
    user, device = make_vendor_user(), make_device()
    session = _session(user, device, make_grant(user, device))
    record_command(session.pk, 1.25, "status", "line")
    command = session.commands.get()
    assert (command.t, command.text, command.kind) == (1.25, "status", "line")
