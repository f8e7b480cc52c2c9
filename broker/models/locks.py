"""Locks: a vendor, user, device or grant that may not connect while the lock holds."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from broker import oversight
from broker.models.people import User, Vendor
from broker.models.plant import Device
from broker.models.requests import Grant


class LockQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> LockQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)

    def active(self, at: datetime) -> LockQuerySet:
        return self.filter(lifted_at=None).filter(Q(expires_at=None) | Q(expires_at__gt=at))

    def naming(self, *, user: User, device: Device, grant: Grant | None = None) -> LockQuerySet:
        q = Q(user=user) | Q(device=device)
        if user.vendor_id:
            q |= Q(vendor_id=user.vendor_id)
        if grant is not None:
            q |= Q(grant=grant)
        return self.filter(q)


class Lock(models.Model):
    """While active, nothing the lock names may connect, and whatever it
    names that is live is terminated. Exactly one target is set."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    vendor = models.ForeignKey(Vendor, null=True, blank=True, on_delete=models.CASCADE)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="locks"
    )
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE)
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.CASCADE)
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = LockQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(vendor__isnull=False, user=None, device=None, grant=None)
                    | Q(vendor=None, user__isnull=False, device=None, grant=None)
                    | Q(vendor=None, user=None, device__isnull=False, grant=None)
                    | Q(vendor=None, user=None, device=None, grant__isnull=False)
                ),
                name="lock_names_exactly_one_target",
            )
        ]

    def __str__(self) -> str:
        return f"lock on {self.target_label}"

    @property
    def target_label(self) -> str:
        if self.vendor_id:
            return f"vendor {self.vendor}"
        if self.user_id:
            return f"user {self.user}"
        if self.device_id:
            return f"device {self.device}"
        return f"grant {self.grant.code}"

    def is_active(self, at: datetime) -> bool:
        return self.lifted_at is None and (self.expires_at is None or at < self.expires_at)
