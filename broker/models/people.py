"""People: vendor companies, users with their roles, approver groups, invitations."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from broker.models.plant import validate_cidrs

# --- people -----------------------------------------------------------------


class Vendor(models.Model):
    """A vendor organisation whose people service the plant's devices."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    contract_ends_at = models.DateTimeField(
        null=True, blank=True, help_text="After this, the vendor's users cannot sign in."
    )
    allowed_cidrs = models.TextField(
        blank=True,
        validators=[validate_cidrs],
        help_text="Source addresses the vendor may connect from, one CIDR per line. "
        "Empty allows any address.",
    )
    eligible_devices = models.ManyToManyField("Device", blank=True, related_name="eligible_vendors")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_contract_valid(self, at: datetime) -> bool:
        return self.contract_ends_at is None or at < self.contract_ends_at

    def allows_address(self, address: str | None) -> bool:
        networks = self.allowed_cidrs.split()
        if not networks:
            return True
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


class User(AbstractUser):
    """A person. Vendor users belong to exactly one Vendor; approvers are
    members of ApproverGroups; auditors read; admins are staff."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    email = models.EmailField(blank=True)
    vendor = models.ForeignKey(
        Vendor, null=True, blank=True, on_delete=models.PROTECT, related_name="users"
    )
    is_auditor = models.BooleanField(default=False)
    is_vendor_admin = models.BooleanField(
        default=False,
        help_text="A vendor user who oversees the sessions, requests and grants of the "
        "whole company (others see only their own). Set by admins.",
    )

    objects = UserManager()

    class Meta:
        ordering = ["username"]

    def clean(self) -> None:
        super().clean()
        if self.vendor_id and (self.is_staff or self.is_auditor):
            raise ValidationError("A vendor user cannot also be an auditor or an admin.")
        if self.is_vendor_admin and not self.vendor_id:
            raise ValidationError("Only a vendor user can be a vendor admin.")
        if self.vendor_id and self.is_approver:
            # A vendor approving its own company's access defeats the policy.
            raise ValidationError("A vendor user cannot also be an approver.")

    @property
    def is_vendor_user(self) -> bool:
        return self.vendor_id is not None

    @property
    def is_approver(self) -> bool:
        return self.pk is not None and self.approver_groups.exists()

    @property
    def is_admin(self) -> bool:
        return self.is_staff or self.is_superuser

    @property
    def roles(self) -> list[str]:
        roles = []
        if self.is_vendor_user:
            roles.append("vendor")
        if self.is_approver:
            roles.append("approver")
        if self.is_auditor:
            roles.append("auditor")
        if self.is_admin:
            roles.append("admin")
        return roles


class ApproverGroup(models.Model):
    """A group of approvers, e.g. "Plant operations" or "OT security"."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    members = models.ManyToManyField(User, blank=True, related_name="approver_groups")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Invitation(models.Model):
    """A one-time invitation by email. Only the SHA-256 of the token is kept."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    email = models.EmailField()
    username = models.CharField(max_length=150)
    vendor = models.ForeignKey(Vendor, null=True, blank=True, on_delete=models.CASCADE)
    approver_groups = models.ManyToManyField(ApproverGroup, blank=True)
    is_auditor = models.BooleanField(default=False)
    is_staff = models.BooleanField(default=False)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations"
    )

    def is_usable(self, at: datetime) -> bool:
        return self.used_at is None and at < self.expires_at


class SSHPublicKey(models.Model):
    """A vendor's SSH public key for the gateway."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=120, blank=True)
    public_key = models.TextField()
    algorithm = models.CharField(max_length=40)
    bits = models.PositiveIntegerField(default=0)
    fingerprint = models.CharField(max_length=80, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.fingerprint} ({self.name or self.algorithm})"
