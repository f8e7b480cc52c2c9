"""Email about access: to approvers when a request arrives, to the vendor
user on each decision, on expiry and when a grant is revoked.

Each function takes a primary key (it runs in a Celery task, perhaps
retried, perhaps on another machine), builds the messages, and sends each
(key, recipient) pair at most once: the SentNotification row is created
before sending, and a row already marked sent is skipped.
Emails name devices, windows and people — never a credential.
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from broker.approvals import describe_window, quorum_progress
from broker.models import AccessRequest, Approval, Grant, SentNotification, User


def _link(name: str, code: object) -> str:
    return settings.PORTAL_URL + reverse(name, args=[code])


def _send_once(key: str, recipient: str, subject: str, body: str) -> bool:
    """Send unless this (key, recipient) was already sent. True if sent now."""
    if not recipient:
        return False
    try:
        with transaction.atomic():
            row, _ = SentNotification.objects.get_or_create(key=key, recipient=recipient)
    except IntegrityError:
        row = SentNotification.objects.get(key=key, recipient=recipient)
    if row.sent_at is not None:
        return False
    # Claim the row first so two workers retrying at once send once.
    claimed = SentNotification.objects.filter(pk=row.pk, sent_at=None).update(
        sent_at=timezone.now()
    )
    if not claimed:
        return False
    try:
        send_mail(f"[Airlock] {subject}", body, settings.DEFAULT_FROM_EMAIL, [recipient])
    except Exception:
        # Un-claim so the task's retry sends it.
        SentNotification.objects.filter(pk=row.pk).update(sent_at=None)
        raise
    return True


def _approvers_of(req: AccessRequest) -> list[User]:
    return list(
        User.objects.filter(
            approver_groups__rules__zone_id=req.device.zone_id,
            is_active=True,
        )
        .exclude(pk=req.user_id)
        .exclude(email="")
        .distinct()
        .order_by("username")
    )


def request_submitted(request_id: int) -> int:
    req = AccessRequest.objects.select_related("user__vendor", "device__zone__site").get(
        pk=request_id
    )
    body = (
        f"{req.user.get_full_name() or req.user.username} of {req.user.vendor} asks for access to "
        f"{req.device.slug} ({req.device.name}, {req.device.zone}).\n\n"
        f"Window: {describe_window(req)}\n"
        f"Protocols: {', '.join(p.upper() for p in req.protocols)}\n"
        f"File transfer asked: upload {'yes' if req.wants_upload else 'no'}, "
        f"download {'yes' if req.wants_download else 'no'}\n"
        f"Reason: {req.reason}\n"
        f"Policy: {quorum_progress(req).summary}\n\n"
        f"Decide here: {_link('request-detail', req.code)}\n"
    )
    subject = f"Access request for {req.device.slug} from {req.user.vendor}"
    return sum(
        _send_once(f"request.new:{req.code}", u.email, subject, body) for u in _approvers_of(req)
    )


def decision(approval_id: int) -> int:
    approval = Approval.objects.select_related(
        "request__user", "request__device__zone__site", "approver", "group"
    ).get(pk=approval_id)
    req = approval.request
    verb = "approved" if approval.decision == Approval.Decision.APPROVE else "denied"
    lines = [
        f"{approval.approver.get_full_name() or approval.approver.username} "
        f"({approval.group}) {verb} your request for {req.device.slug}."
    ]
    if approval.note:
        lines.append(f"Note: {approval.note}")
    if req.status == AccessRequest.Status.APPROVED and hasattr(req, "grant"):
        grant = req.grant
        lines.append(f"Your access is granted: {describe_window(grant)}.")
        lines.append(f"How to connect: {_link('grant-detail', grant.code)}")
    elif req.status == AccessRequest.Status.PENDING:
        lines.append(f"Still pending: {quorum_progress(req).summary}.")
        lines.append(_link("request-detail", req.code))
    elif req.status == AccessRequest.Status.DENIED:
        lines.append("The request is closed.")
    subject = f"Your request for {req.device.slug}: {verb}"
    return int(
        _send_once(f"decision:{approval.pk}", req.user.email, subject, "\n".join(lines) + "\n")
    )


def request_expired(request_id: int) -> int:
    req = AccessRequest.objects.select_related("user", "device").get(pk=request_id)
    body = (
        f"Nobody decided your request for {req.device.slug} ({describe_window(req)}) "
        "in time, so it expired. Ask again if you still need access.\n"
    )
    return int(
        _send_once(
            f"request.expired:{req.code}",
            req.user.email,
            f"Your request for {req.device.slug} expired",
            body,
        )
    )


def grant_revoked(grant_id: int) -> int:
    grant = Grant.objects.select_related("user", "device__zone__site", "revoked_by").get(
        pk=grant_id
    )
    who = grant.revoked_by.username if grant.revoked_by else "Airlock"
    body = (
        f"Your access to {grant.device.slug} ({describe_window(grant)}) was ended by {who}"
        f"{': ' + grant.revoke_reason if grant.revoke_reason else ''}.\n"
        "Live sessions are closed; new connections are refused.\n"
    )
    return int(
        _send_once(
            f"grant.revoked:{grant.code}",
            grant.user.email,
            f"Your access to {grant.device.slug} was ended",
            body,
        )
    )
