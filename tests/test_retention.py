"""Retention: recordings past their zone's retention are deleted through the
recordings storage, one audit event per purge; the session row, its hashes
and the command index stay. Storage is Django's, so an operator can point
it elsewhere without code changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.core.files.storage import storages
from django.urls import reverse
from django.utils import timezone

from broker.models import AuditEvent
from sessions.evidence import retention
from sessions.evidence.review import integrity
from sessions.live.recording import recordings_dir, recordings_storage
from sessions.models import Command, Session
from sessions.tasks import purge_expired_recordings
from tests.support.recordings import recorded_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_session(make_vendor_user, make_device, make_grant, make_zone):
    def make(*, retention_days: int = 365, ended_days_ago: float = 0) -> Session:
        zone = make_zone(retention_days=retention_days)
        user = make_vendor_user()
        device = make_device(zone=zone)
        grant = make_grant(user, device)
        return recorded_session(user, device, grant, ended_days_ago=ended_days_ago)

    return make


def test_expired_recording_is_deleted_and_the_row_and_hashes_stay(make_session):
    old = make_session(retention_days=30, ended_days_ago=31)
    path = recordings_dir() / old.recording
    assert path.exists()
    result = retention.purge(timezone.now())
    assert result.purged == [str(old.code)]
    assert not path.exists()
    old.refresh_from_db()
    assert old.recording_purged_at is not None
    assert len(old.recording_sha256) == 64
    assert Command.objects.filter(session=old).exists()
    event = AuditEvent.objects.get(action="session.recording_purged")
    assert event.target == f"session {old.code}"
    assert event.data["recording_sha256"] == old.recording_sha256
    assert event.data["retention_days"] == 30
    assert integrity(old).state == "purged"


def test_recordings_within_retention_and_live_sessions_are_kept(make_session):
    young = make_session(retention_days=30, ended_days_ago=29)
    long_kept = make_session(retention_days=3650, ended_days_ago=400)
    live = make_session(retention_days=1)
    Session.objects.filter(pk=live.pk).update(
        ended_at=None, started_at=timezone.now() - timedelta(days=5)
    )
    assert retention.purge(timezone.now()).purged == []
    for session in (young, long_kept, live):
        assert (recordings_dir() / session.recording).exists()
    assert not AuditEvent.objects.filter(action="session.recording_purged").exists()


def test_purge_is_idempotent(make_session):
    make_session(retention_days=1, ended_days_ago=2)
    assert len(retention.purge(timezone.now()).purged) == 1
    assert retention.purge(timezone.now()).purged == []
    assert AuditEvent.objects.filter(action="session.recording_purged").count() == 1


def test_periodic_task_is_scheduled_and_purges_when_the_days_have_passed(make_session):
    assert (
        django_settings.CELERY_BEAT_SCHEDULE["purge-recordings"]["task"]
        == "sessions.tasks.purge_expired_recordings"
    )
    session = make_session(retention_days=7)
    assert purge_expired_recordings.apply().get() == {"purged": 0, "failed": 0}
    with time_machine.travel(timezone.now() + timedelta(days=7, minutes=1), tick=False):
        assert purge_expired_recordings.apply().get() == {"purged": 1, "failed": 0}
    assert not (recordings_dir() / session.recording).exists()


def test_purged_recording_shows_why_on_the_review_page(make_session, make_user, verified_client):
    session = make_session(retention_days=1, ended_days_ago=3)
    retention.purge(timezone.now())
    client = verified_client(make_user("audrey", is_auditor=True))
    page = client.get(reverse("session-detail", args=[session.code])).content.decode()
    assert "retention" in page
    assert session.recording_sha256 in page
    assert client.get(reverse("session-recording", args=[session.code])).status_code == 409


def test_recordings_go_to_the_configured_storage_and_are_purged_there(
    settings, tmp_path, make_session
):
    """An operator names another storage (S3 through django-storages works the
    same way): finished recordings move there, review reads and retention
    deletes there."""
    elsewhere = tmp_path / "archive"
    settings.STORAGES = {
        **settings.STORAGES,
        "recordings": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(elsewhere)},
        },
    }
    storages._storages.pop("recordings", None)  # settings changed mid-process
    session = make_session(retention_days=1)
    assert not (recordings_dir() / session.recording).exists()
    assert (elsewhere / session.recording).exists()
    assert recordings_storage().exists(session.recording)
    assert integrity(session).ok
    Session.objects.filter(pk=session.pk).update(ended_at=timezone.now() - timedelta(days=2))
    assert retention.purge(timezone.now()).purged == [str(session.code)]
    assert not (elsewhere / session.recording).exists()
