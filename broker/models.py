"""Who may reach what: people, vendors, the inventory, the vault, requests,
approvals, grants and locks, and the audit chain.

Rules about one row live on the model; workflows that span rows live in
concept modules (access.py, approvals.py, audit.py, vault.py).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
import uuid
from base64 import b32encode
from binascii import unhexlify
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_otp.models import Device as OTPDevice
from django_otp.models import ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from django_otp.util import random_hex

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]*$", "Use lower-case letters, digits and hyphens only."
)


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone.")


def validate_cidrs(value: str) -> None:
    for line in value.split():
        try:
            ipaddress.ip_network(line, strict=False)
        except ValueError:
            raise ValidationError(f"{line!r} is not an address or network (CIDR).")


class Protocol(models.TextChoices):
    SSH = "ssh", "SSH"
    RDP = "rdp", "RDP"


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
    eligible_devices = models.ManyToManyField(
        "Device", blank=True, related_name="eligible_vendors"
    )
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

    objects = UserManager()

    class Meta:
        ordering = ["username"]

    def clean(self) -> None:
        super().clean()
        if self.vendor_id and (self.is_staff or self.is_auditor):
            raise ValidationError("A vendor user cannot also be an auditor or an admin.")

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


# --- inventory ----------------------------------------------------------------


class Site(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(unique=True, validators=[slug_validator])
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Zone(models.Model):
    """A part of a site with one approval policy, one maximum window, one
    time zone and (later) one response policy and retention."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="zones")
    name = models.CharField(max_length=120)
    slug = models.SlugField(validators=[slug_validator])
    timezone = models.CharField(
        max_length=64, blank=True, validators=[validate_timezone],
        help_text="IANA time zone; empty uses the site's.",
    )
    max_window = models.DurationField(default=timedelta(hours=8))
    requires_connection_otp = models.BooleanField(
        default=False,
        help_text="Ask for a fresh TOTP code on every connection (SSH keyboard-interactive, "
        "browser terminal).",
    )
    retention_days = models.PositiveIntegerField(default=365)

    class Meta:
        ordering = ["site__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "slug"], name="zone_slug_unique_per_site")
        ]

    def __str__(self) -> str:
        return f"{self.site.name} / {self.name}"

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or self.site.timezone)


class ApprovalRule(models.Model):
    """One clause of a zone's approval policy: `count` approvals from `group`.
    Every rule of a zone must be met (AND)."""

    zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="approval_rules")
    group = models.ForeignKey(ApproverGroup, on_delete=models.PROTECT, related_name="rules")
    count = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )

    class Meta:
        ordering = ["group__name"]
        constraints = [
            models.UniqueConstraint(fields=["zone", "group"], name="one_rule_per_group_per_zone")
        ]

    def __str__(self) -> str:
        return f"{self.count} of {self.group.name}"


class DeviceQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> "DeviceQuerySet":
        """Vendors: the active devices their org is eligible for. Approvers:
        the devices of zones whose policy names one of their groups.
        Auditors and superusers: all."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_auditor or user.is_superuser:
            return self.all()
        q = Q(pk__in=[])
        if user.vendor_id:
            q |= Q(eligible_vendors=user.vendor_id, is_active=True)
        q |= Q(zone__approval_rules__group__members=user)
        return self.filter(q).distinct()


class Device(models.Model):
    class RDPSecurity(models.TextChoices):
        NLA = "nla", "NLA (network level authentication)"
        TLS = "tls", "TLS only (no NLA)"

    class Kind(models.TextChoices):
        PLC = "plc", "PLC"
        HMI = "hmi", "HMI"
        WORKSTATION = "workstation", "Engineering workstation"
        HISTORIAN = "historian", "Historian"
        OTHER = "other", "Other"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OTHER)
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="devices")
    ssh_host = models.CharField(max_length=255, blank=True)
    ssh_port = models.PositiveIntegerField(
        default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    ssh_host_key = models.TextField(
        blank=True,
        help_text="The device's pinned SSH host key (OpenSSH public key line). "
        "Airlock refuses to connect when the device presents another.",
    )
    rdp_host = models.CharField(max_length=255, blank=True)
    rdp_port = models.PositiveIntegerField(
        default=3389, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    rdp_security = models.CharField(
        max_length=8, choices=RDPSecurity.choices, default=RDPSecurity.NLA,
        help_text="NLA: the device checks Airlock's credential before any screen is shown. "
        "TLS only: for devices without NLA; vendor input stays blocked until the "
        "desktop is past its login screen.",
    )
    rdp_certificate_sha256 = models.CharField(
        max_length=95, blank=True,
        help_text="The device's pinned RDP TLS certificate (SHA-256, colon-separated hex; "
        "`manage.py pinrdpcert`). Airlock refuses a device presenting another.",
    )
    is_active = models.BooleanField(default=True)

    objects = DeviceQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def protocols(self) -> list[str]:
        found = []
        if self.ssh_host:
            found.append(Protocol.SSH)
        if self.rdp_host:
            found.append(Protocol.RDP)
        return found


class Credential(models.Model):
    """A vaulted device credential. The secret is AES-GCM ciphertext under the
    vault key named by key_id (broker/vault.py); it is never rendered."""

    VAULT_FIELDS = ("key_id", "ciphertext")  # re-sealed by vault.rotate()

    class Kind(models.TextChoices):
        PASSWORD = "password", "Password"
        PRIVATE_KEY = "private_key", "Private key"

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="credentials")
    protocol = models.CharField(max_length=8, choices=Protocol.choices)
    username = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PASSWORD)
    key_id = models.CharField(max_length=16, editable=False)
    ciphertext = models.BinaryField(editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "protocol"], name="one_credential_per_device_protocol"
            )
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.device.slug} ({self.protocol})"

    def __repr__(self) -> str:
        return f"<Credential {self.pk} {self.device_id}/{self.protocol} secret=***>"

    @property
    def has_secret(self) -> bool:
        return bool(self.key_id)

    def set_secret(self, plaintext: str) -> None:
        """Seal `plaintext` under the current vault key (the caller saves)."""
        from broker import vault

        self.key_id, self.ciphertext = vault.seal(plaintext)
        self.updated_at = timezone.now()


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


# --- requests, approvals, grants, locks --------------------------------------


class AccessRequestQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> "AccessRequestQuerySet":
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_auditor or user.is_superuser:
            return self.all()
        q = Q(pk__in=[])
        if user.vendor_id:
            q |= Q(user__vendor_id=user.vendor_id)
        q |= Q(device__zone__approval_rules__group__members=user)
        return self.filter(q).distinct()


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
        ApproverGroup, null=True, blank=True, on_delete=models.PROTECT,
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
    def visible_to(self, user: User) -> "GrantQuerySet":
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_auditor or user.is_superuser:
            return self.all()
        q = Q(pk__in=[])
        if user.vendor_id:
            q |= Q(user__vendor_id=user.vendor_id)
        q |= Q(device__zone__approval_rules__group__members=user)
        return self.filter(q).distinct()

    def live(self, at: datetime) -> "GrantQuerySet":
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
        default=list, blank=True,
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


class LockQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> "LockQuerySet":
        """Approvers see locks on vendors and users (they hold everywhere)
        and on devices and grants of their zones; auditors and superusers
        see all; vendors see none."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_auditor or user.is_superuser:
            return self.all()
        if not user.is_approver:
            return self.none()
        zone_q = Q(approval_rules__group__members=user)
        zones = Zone.objects.filter(zone_q).values("pk")
        q = (Q(vendor__isnull=False) | Q(user__isnull=False)
             | Q(device__zone__in=zones) | Q(grant__device__zone__in=zones))
        return self.filter(q)

    def active(self, at: datetime) -> "LockQuerySet":
        return self.filter(lifted_at=None).filter(Q(expires_at=None) | Q(expires_at__gt=at))

    def naming(self, *, user: User, device: Device, grant: Grant | None = None) -> "LockQuerySet":
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
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE, related_name="locks")
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


class SentNotification(models.Model):
    """One email that was sent (or is being sent). Notification tasks
    create the row before sending, so a retried task does not send twice."""

    key = models.CharField(max_length=200, help_text="what the email is about, e.g. request.new:<code>")
    recipient = models.EmailField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "recipient"], name="one_email_per_key_recipient")
        ]


# --- audit ---------------------------------------------------------------------


class AppendOnlyError(RuntimeError):
    """Raised on an attempt to change or delete an audit event through the ORM."""


class AuditEventQuerySet(models.QuerySet):
    # Bulk changes would bypass AuditEvent.save()/delete(); refuse them too.
    # (Raw SQL can still edit rows: that is what `manage.py verifyaudit` finds.)
    def update(self, **kwargs):
        raise AppendOnlyError("audit events are append-only: they cannot be updated")

    def delete(self):
        raise AppendOnlyError("audit events are append-only: they cannot be deleted")


class AuditEvent(models.Model):
    """Append-only, hash-chained record of what happened (broker/audit.py).

    hash = SHA-256 over (prev_hash, at, actor, action, target, source_ip, data);
    prev_hash is the hash of the row before. Never update or delete a row:
    save() of an existing row and delete() raise AppendOnlyError."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, blank=True, help_text="username, sensor:NAME or system")
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=300, blank=True, db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only: they cannot be updated")
        # Inserting only: never fall back to an UPDATE of a row with this id.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only: they cannot be deleted")


class AuditChainHead(models.Model):
    """The single row writers lock to serialise appends to the chain."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)


# --- second factor --------------------------------------------------------------


class TOTPDevice(TimestampMixin, ThrottlingMixin, OTPDevice):
    """A TOTP authenticator whose seed is sealed by the vault (AES-GCM), so
    the database never holds it in the clear. Takes the place of django-otp's
    own TOTPDevice (which stores the seed as plain hex); django-otp finds it
    like any other Device. Verification is django-otp's TOTP algorithm."""

    VAULT_FIELDS = ("key_id", "sealed_key")  # re-sealed by vault.rotate()

    key_id = models.CharField(max_length=16, editable=False)
    sealed_key = models.BinaryField(editable=False)
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(
        default=-1, help_text="The time step of the last accepted code; a code is accepted once.")

    class Meta(OTPDevice.Meta):
        verbose_name = "TOTP authenticator"

    def __repr__(self) -> str:
        return f"<TOTPDevice {self.pk} user={self.user_id} seed=***>"

    @property
    def key(self) -> str:
        """The seed as hex. Generated on first use; sealed at once."""
        from broker import vault

        if not self.key_id:
            self.key = random_hex(20)
        return vault.open_blob(self.key_id, self.sealed_key)

    @key.setter
    def key(self, value: str) -> None:
        from broker import vault

        unhexlify(value.encode())  # refuse anything that is not hex
        self.key_id, self.sealed_key = vault.seal(value)

    @property
    def bin_key(self) -> bytes:
        return unhexlify(self.key.encode())

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.key_id:
            self.key = random_hex(20)
        super().save(*args, **kwargs)

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            value = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
            totp.time = time.time()
            # Only codes after the last accepted one: a code works once.
            verified = totp.verify(value, self.tolerance, self.last_t + 1)
            if verified:
                self.last_t = totp.t()
                self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    @property
    def config_url(self) -> str:
        """The otpauth:// URI an authenticator app scans."""
        issuer = settings.OTP_TOTP_ISSUER.replace(":", "")
        label = f"{issuer}:{self.user.get_username()}"
        params = urlencode({
            "secret": b32encode(self.bin_key).decode().rstrip("="), "algorithm": "SHA1",
            "digits": self.digits, "period": self.step,
        })
        return f"otpauth://totp/{quote(label)}?{params}&issuer={quote(issuer)}"


class StaticDevice(TimestampMixin, ThrottlingMixin, OTPDevice):
    """Backup codes: each works once. Only salted PBKDF2 hashes of the codes
    are stored (django-otp's own static plugin stores them in the clear)."""

    class Meta(OTPDevice.Meta):
        verbose_name = "backup codes"

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        text = str(token).strip().lower()
        match = next((t for t in self.token_set.all() if t.matches(text)), None)
        # Delete by compare-and-set: a code used twice at once works once.
        verified = match is not None and StaticToken.objects.filter(pk=match.pk).delete()[0] == 1
        if verified:
            self.throttle_reset()
        else:
            self.throttle_increment()
        return verified

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1)


class StaticToken(models.Model):
    """One backup code, stored as "salt$pbkdf2-sha256 hex"."""

    ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
    ITERATIONS = 20_000

    device = models.ForeignKey(StaticDevice, on_delete=models.CASCADE, related_name="token_set")
    token_hash = models.CharField(max_length=120)

    def __repr__(self) -> str:
        return f"<StaticToken {self.pk} device={self.device_id} code=***>"

    @classmethod
    def random_token(cls) -> str:
        return "".join(secrets.choice(cls.ALPHABET) for _ in range(8))

    @classmethod
    def _digest(cls, salt: str, token: str) -> str:
        return hashlib.pbkdf2_hmac("sha256", token.encode(), salt.encode(), cls.ITERATIONS).hex()

    @property
    def token(self) -> str:
        raise AttributeError("backup codes are stored hashed; they cannot be read back")

    @token.setter
    def token(self, value: str) -> None:
        salt = secrets.token_hex(8)
        self.token_hash = f"{salt}${self._digest(salt, value.strip().lower())}"

    def matches(self, token: str) -> bool:
        salt, _, digest = self.token_hash.partition("$")
        return hmac.compare_digest(digest, self._digest(salt, token))
