"""The plant: sites, zones and their approval rules, devices, vaulted credentials,
and the vendors' registered SSH keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.models.people import User

import ipaddress
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo, available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from broker import oversight

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
        max_length=64,
        blank=True,
        validators=[validate_timezone],
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
    group = models.ForeignKey(
        "broker.ApproverGroup", on_delete=models.PROTECT, related_name="rules"
    )
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
    def visible_to(self, user: User) -> DeviceQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)


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
        max_length=8,
        choices=RDPSecurity.choices,
        default=RDPSecurity.NLA,
        help_text="NLA: the device checks Airlock's credential before any screen is shown. "
        "TLS only: for devices without NLA; vendor input stays blocked until the "
        "desktop is past its login screen.",
    )
    rdp_certificate_sha256 = models.CharField(
        max_length=95,
        blank=True,
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
