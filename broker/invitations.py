"""Invitations: the only way in. There is no self-signup.

An admin invites an email address for one role (a vendor company's user,
approver groups, auditor, admin). The invitee gets a one-time link that
expires after settings.INVITATION_TTL; only the SHA-256 of its token is
stored. Accepting it creates the account with the password the invitee
chose; the account then has to enrol an authenticator before anything else
(broker.middleware.RequireOTPMiddleware sends it to enrolment).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from broker import audit
from broker.models import ApproverGroup, Invitation, User, Vendor


class InvitationError(Exception):
    """The link cannot be used. `reason` is a code, str() a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(token: str) -> str:
    return settings.PORTAL_URL + reverse("invitation", args=[token])


def role_label(invitation: Invitation) -> str:
    if invitation.vendor_id:
        return f"vendor user for {invitation.vendor.name}"
    if invitation.is_staff:
        return "administrator"
    if invitation.is_auditor:
        return "auditor"
    groups = ", ".join(g.name for g in invitation.approver_groups.all())
    return f"approver ({groups})" if groups else "user"


def invite(
    *,
    email: str,
    username: str,
    invited_by: User | None,
    vendor: Vendor | None = None,
    approver_groups: Iterable[ApproverGroup] = (),
    is_auditor: bool = False,
    is_staff: bool = False,
    source_ip: str | None = None,
) -> tuple[Invitation, str]:
    """Create an invitation, email its link, audit it. Returns the
    invitation and the token (the only copy; it is not stored)."""
    groups = list(approver_groups)
    if vendor is not None and (groups or is_auditor or is_staff):
        raise ValueError("a vendor user cannot also be an approver, auditor or admin")
    if User.objects.filter(username__iexact=username).exists():
        raise ValueError(f"the username {username!r} is taken")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        invitation = Invitation.objects.create(
            email=email,
            username=username,
            vendor=vendor,
            is_auditor=is_auditor,
            is_staff=is_staff,
            token_hash=hash_token(token),
            invited_by=invited_by,
            created_at=now,
            expires_at=now + settings.INVITATION_TTL,
        )
        invitation.approver_groups.set(groups)
        audit.record(
            "invitation.sent",
            actor=invited_by,
            target=f"invitation:{invitation.code}",
            source_ip=source_ip,
            data={"email": email, "username": username, "role": role_label(invitation)},
        )
    context = {
        "invitation": invitation,
        "url": invitation_url(token),
        "role": role_label(invitation),
        "hours": int(settings.INVITATION_TTL.total_seconds() // 3600),
    }
    send_mail(
        subject="Your Airlock account",
        message=render_to_string("registration/invitation_email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[email],
    )
    return invitation, token


def find(token: str, *, source_ip: str | None = None) -> Invitation:
    """The usable invitation for `token`, or InvitationError (audited)."""
    invitation = Invitation.objects.filter(token_hash=hash_token(token)).first()
    now = timezone.now()
    if invitation is None:
        audit.record(
            "invitation.refused",
            actor="anonymous",
            target="invitation:unknown",
            source_ip=source_ip,
            data={"reason": "unknown"},
        )
        raise InvitationError(
            "unknown",
            "This invitation link is not valid. Check that you "
            "copied the whole link from the email.",
        )
    if invitation.used_at is not None:
        _refuse(invitation, "used", source_ip)
        raise InvitationError(
            "used",
            "This invitation link was already used. Sign in with "
            "the password you chose, or ask for a new invitation.",
        )
    if not invitation.is_usable(now):
        _refuse(invitation, "expired", source_ip)
        raise InvitationError(
            "expired",
            "This invitation link has expired. Ask the person who invited you to send a new one.",
        )
    if invitation.vendor is not None and not invitation.vendor.is_contract_valid(now):
        _refuse(invitation, "contract_ended", source_ip)
        raise InvitationError(
            "contract_ended",
            f"The contract of {invitation.vendor.name} with "
            "the plant has ended, so this invitation cannot "
            "be used. Ask your contact at the plant.",
        )
    return invitation


def _refuse(invitation: Invitation, reason: str, source_ip: str | None) -> None:
    audit.record(
        "invitation.refused",
        actor=invitation.username,
        target=f"invitation:{invitation.code}",
        source_ip=source_ip,
        data={"reason": reason},
    )


def accept(invitation: Invitation, password: str, *, source_ip: str | None = None) -> User:
    """Use the invitation once: create the account with `password`.

    Compare-and-set on used_at, so two tabs (or two people with the same
    link) cannot both create an account from it."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Invitation.objects.filter(
            pk=invitation.pk,
            used_at=None,
            expires_at__gt=now,
        ).update(used_at=now)
        if claimed != 1:
            fresh = Invitation.objects.get(pk=invitation.pk)
            reason = "used" if fresh.used_at is not None else "expired"
            _refuse(invitation, reason, source_ip)
            raise InvitationError(
                reason,
                "This invitation link was already used or has expired. Ask for a new invitation.",
            )
        try:
            with transaction.atomic():
                user = User.objects.create(
                    username=invitation.username,
                    email=invitation.email,
                    password=make_password(password),
                    vendor=invitation.vendor,
                    is_auditor=invitation.is_auditor,
                    is_staff=invitation.is_staff,
                    is_superuser=invitation.is_staff,
                )
        except IntegrityError:
            raise InvitationError(
                "taken",
                "Someone already has the username of this invitation. Ask for a new invitation.",
            )
        user.approver_groups.set(invitation.approver_groups.all())
        Invitation.objects.filter(pk=invitation.pk).update(user=user)
        audit.record(
            "invitation.used",
            actor=user,
            target=f"invitation:{invitation.code}",
            source_ip=source_ip,
            data={"role": role_label(invitation)},
        )
    return user
