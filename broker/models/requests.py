"""Access requests, the approvals they collect, and the grants they become."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone

from broker import oversight
from broker.models.people import ApproverGroup, User
from broker.models.plant import Device

# --- requests, approvals, grants, locks --------------------------------------


class AccessRequestQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> AccessRequestQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="access_requests")
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="access_requests")
    protocols = models.JSONField(default=list)
    starts_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty means: from the moment it is approved."
    )
    duration = models.DurationField()
    reason = models.TextField(help_text="Reason or work-order reference.")
    wants_upload = models.BooleanField(default=False)
    wants_download = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    objects = AccessRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} → {self.device} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    def latest_end(self) -> datetime | None:
        """When the requested window would end, if its start is fixed."""
        return self.starts_at + self.duration if self.starts_at else None


class Approval(models.Model):
    """One approver's decision on a request. A person decides once."""

    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        DENY = "deny", "Deny"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(User, on_delete=models.PROTECT, related_name="approvals")
    group = models.ForeignKey(
        ApproverGroup,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        help_text="The policy group this approval counts for.",
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    note = models.TextField(blank=True)
    ends_at_limit = models.DateTimeField(
        null=True, blank=True, help_text="The approver shortened the window to end here."
    )
    allow_upload = models.BooleanField(default=True)
    allow_download = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="one_decision_per_person")
        ]


class GrantQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> GrantQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)

    def live(self, at: datetime) -> GrantQuerySet:
        return self.filter(revoked_at=None, starts_at__lte=at, ends_at__gt=at)


class Grant(models.Model):
    """Approved access for one user to one device in one window."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request = models.OneToOneField(
        AccessRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="grant"
    )
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="grants")
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="grants")
    protocols = models.JSONField(default=list)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    allow_upload = models.BooleanField(default=False)
    allow_download = models.BooleanField(default=False)
    forward_ports = models.JSONField(
        default=list,
        blank=True,
        help_text="Device TCP ports the vendor may reach with ssh -L (only on the device).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    revoke_reason = models.CharField(max_length=300, blank=True)

    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]

    def __str__(self) -> str:
        return f"{self.user} → {self.device} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M}"

    def covers(self, at: datetime, protocol: str | None = None) -> bool:
        if self.revoked_at is not None and self.revoked_at <= at:
            return False
        if not (self.starts_at <= at < self.ends_at):
            return False
        return protocol is None or protocol in self.protocols
