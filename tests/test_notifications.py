"""Email about access, sent by Celery tasks queued on commit, once each."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from broker import approvals, notifications, tasks
from broker.models import SentNotification
from tests.support.access_fixtures import plant  # noqa: F401

pytestmark = pytest.mark.both


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PORTAL_URL = "https://airlock.plant.test"


def submit(plant, capture):
    with capture(execute=True):
        return approvals.submit_request(
            plant.vera,
            plant.device,
            protocols=["ssh"],
            starts_at=None,
            duration=timedelta(hours=2),
            reason="WO-4711 replace HMI cable",
        )


def test_a_new_request_emails_the_zones_approvers_with_a_link(
    plant, django_capture_on_commit_callbacks
):
    req = submit(plant, django_capture_on_commit_callbacks)
    assert sorted(m.to[0] for m in mail.outbox) == ["olga@plant.test", "sam@plant.test"]
    body = mail.outbox[0].body
    assert f"https://airlock.plant.test/access/requests/{req.code}/" in body
    assert "WO-4711" in body and "plc-7" in body and "0 of 2" in body


def test_nothing_is_sent_before_the_transaction_commits(plant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        approvals.submit_request(
            plant.vera,
            plant.device,
            protocols=["ssh"],
            starts_at=None,
            duration=timedelta(hours=1),
            reason="WO-1",
        )
    assert len(callbacks) == 1 and mail.outbox == []


def test_approvers_of_other_zones_and_the_requester_are_not_emailed(
    plant, make_group, make_approver, django_capture_on_commit_callbacks
):
    make_approver("ivan", groups=[make_group("Utilities")], email="ivan@plant.test")
    plant.ops.members.add(plant.vera)
    submit(plant, django_capture_on_commit_callbacks)
    recipients = {m.to[0] for m in mail.outbox}
    assert "ivan@plant.test" not in recipients and "vera@vendor.test" not in recipients


def test_the_vendor_hears_about_each_decision(plant, django_capture_on_commit_callbacks):
    req = submit(plant, django_capture_on_commit_callbacks)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(plant.olga, req, approve=True, note="ok from ops")
    assert [m.to for m in mail.outbox] == [["vera@vendor.test"]]
    assert "Still pending: 1 of 2: OT security pending" in mail.outbox[0].body
    assert "ok from ops" in mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(plant.sam, req, approve=True)
    assert "Your access is granted" in mail.outbox[1].body
    assert "/access/grants/" in mail.outbox[1].body


def test_a_deny_is_emailed_to_the_vendor(plant, django_capture_on_commit_callbacks):
    req = submit(plant, django_capture_on_commit_callbacks)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(plant.sam, req, approve=False, note="not during the restart")
    assert (
        mail.outbox[0].subject.endswith("denied")
        and "not during the restart" in mail.outbox[0].body
    )


def test_a_revocation_is_emailed_to_the_vendor(
    plant, make_grant, django_capture_on_commit_callbacks
):
    grant = make_grant(plant.vera, plant.device)
    with django_capture_on_commit_callbacks(execute=True):
        approvals.revoke_grant(plant.olga, grant, reason="odd traffic on the line")
    assert [m.to for m in mail.outbox] == [["vera@vendor.test"]]
    assert "odd traffic on the line" in mail.outbox[0].body and "olga" in mail.outbox[0].body


def test_an_expired_request_is_emailed_to_the_vendor(plant, django_capture_on_commit_callbacks):
    submit(plant, django_capture_on_commit_callbacks)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.expire_pending(timezone.now() + timedelta(days=8))
    assert mail.outbox[0].subject.endswith("expired")


def test_a_retried_task_does_not_send_again(plant, django_capture_on_commit_callbacks):
    req = submit(plant, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    assert tasks.notify_request_submitted(req.pk) == 0
    assert len(mail.outbox) == 2
    assert SentNotification.objects.filter(key=f"request.new:{req.code}").count() == 2


def test_a_failed_send_is_retried_later(plant, monkeypatch):
    req = approvals.submit_request(
        plant.vera,
        plant.device,
        protocols=["ssh"],
        starts_at=None,
        duration=timedelta(hours=1),
        reason="WO-1",
    )

    def broken(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr(notifications, "send_mail", broken)
    with pytest.raises(OSError):
        notifications.request_submitted(req.pk)
    monkeypatch.undo()
    assert notifications.request_submitted(req.pk) == 2
    assert len(mail.outbox) == 2
