"""Live control: the machines that report anomalies (Sensor), what they and
the built-in detectors report (Signal), what a zone does about it
(ResponseRule, CommandRule), and which gateways are alive (Gateway).

Imported by sessions/models.py so Django sees these models in the
`access_sessions` app; kept apart from the Session model so the session core
and live control can change without touching each other's file.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from broker import oversight
from broker.models import Device, User, Zone

sensor_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
    "Use letters, digits, dots, hyphens and underscores (at most 63).",
)


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


SEVERITY_ORDER = [Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]


class Sensor(models.Model):
    """A machine (an IDS, an OT monitor, a script) that posts signed signals.

    The shared secret is sealed by the vault (AES-GCM, key id kept beside the
    ciphertext) and only ever shown once, when it is generated."""

    VAULT_FIELDS = ("key_id", "ciphertext")  # re-sealed by vault.rotate()

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63, unique=True, validators=[sensor_name_validator])
    description = models.CharField(max_length=200, blank=True)
    key_id = models.CharField(max_length=16, editable=False)
    ciphertext = models.BinaryField(editable=False)
    is_active = models.BooleanField(default=True)
    rate_per_minute = models.PositiveIntegerField(
        default=120, help_text="Signals per minute this sensor may post (bursts up to this)."
    )
    # Token bucket in the database, so every web process shares one limit.
    tokens = models.FloatField(default=-1.0, editable=False)
    tokens_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Deny by default: a sensor with no zone may report about no device.
    zones = models.ManyToManyField(
        Zone,
        blank=True,
        related_name="sensors",
        help_text="Zones whose devices this sensor may report about; none means none.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Sensor {self.name} secret=***>"

    @staticmethod
    def new_secret() -> str:
        return secrets.token_urlsafe(32)

    def set_secret(self, secret: str) -> None:
        from broker import vault

        self.key_id, self.ciphertext = vault.seal(secret)

    def secret(self) -> str:
        from broker import vault

        if not self.key_id:
            raise vault.VaultError(f"sensor {self.name} has no secret set")
        return vault.open_blob(self.key_id, bytes(self.ciphertext))

    def take_token(self, at: datetime) -> bool:
        """Spend one token of the per-sensor bucket; False when empty.
        Serialised on the row so concurrent web processes share the limit."""
        with transaction.atomic():
            row = (
                Sensor.objects.select_for_update()
                .only("pk", "rate_per_minute", "tokens", "tokens_at")
                .get(pk=self.pk)
            )
            capacity = float(max(row.rate_per_minute, 1))
            tokens = capacity if row.tokens < 0 or row.tokens_at is None else row.tokens
            if row.tokens_at is not None:
                elapsed = max((at - row.tokens_at).total_seconds(), 0.0)
                tokens = min(capacity, tokens + elapsed * capacity / 60.0)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            Sensor.objects.filter(pk=row.pk).update(tokens=tokens, tokens_at=at)
        return allowed


class SignalReceipt(models.Model):
    """The X-Airlock-Id of every accepted request: a second use is a replay.
    Rows older than the timestamp window are pruned by the sweep (a request
    that old is refused for its timestamp anyway)."""

    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="receipts")
    nonce = models.CharField(max_length=128)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sensor", "nonce"], name="signal_id_used_once")
        ]


class SignalQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> SignalQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)


class Signal(models.Model):
    """One anomaly report, from a sensor or a built-in detector, and what the
    response policy did about it."""

    class Origin(models.TextChoices):
        SENSOR = "sensor", "Sensor"
        DETECTOR = "detector", "Built-in detector"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    origin = models.CharField(max_length=8, choices=Origin.choices)
    sensor = models.ForeignKey(
        Sensor, null=True, blank=True, on_delete=models.SET_NULL, related_name="signals"
    )
    format = models.CharField(max_length=16, blank=True, help_text="generic, zeek, suricata")
    kind = models.CharField(max_length=80)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    detail = models.TextField(blank=True)
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="signals"
    )
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="signals"
    )
    address = models.GenericIPAddressField(null=True, blank=True)
    sessions = models.ManyToManyField("access_sessions.Session", blank=True, related_name="signals")
    actions = models.JSONField(default=list, blank=True, help_text="What the response policy did.")
    raw = models.JSONField(default=dict, blank=True)

    objects = SignalQuerySet.as_manager()

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.severity} {self.kind} on {self.device or 'unknown device'}"

    @property
    def source_label(self) -> str:
        if self.origin == self.Origin.SENSOR:
            return f"sensor:{self.sensor.name}" if self.sensor else "sensor (deleted)"
        return f"detector:{self.kind}"


class ResponseRule(models.Model):
    """A zone's answer to a signal of one severity. Without a row, the
    defaults in DEFAULT_RESPONSES apply (shown on the zone's policy page)."""

    class Action(models.TextChoices):
        RECORD = "record", "Record only"
        ALERT = "alert", "Alert approvers (email)"
        TERMINATE = "terminate", "Terminate the session"
        LOCK_USER = "lock_user", "Lock the user"
        LOCK_DEVICE = "lock_device", "Lock the device"
        LOCK_VENDOR = "lock_vendor", "Lock the vendor organisation"

    zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="response_rules")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    actions = models.JSONField(default=list)
    lock_minutes = models.PositiveIntegerField(
        default=60, help_text="How long a lock from this rule holds; 0 means until lifted."
    )

    class Meta:
        ordering = ["zone", "severity"]
        constraints = [
            models.UniqueConstraint(fields=["zone", "severity"], name="one_response_per_severity")
        ]

    def __str__(self) -> str:
        return f"{self.zone}: {self.severity} → {', '.join(self.actions) or 'record'}"

    def clean(self) -> None:
        known = set(self.Action.values)
        unknown = [a for a in self.actions if a not in known]
        if unknown:
            raise ValidationError(f"Unknown actions: {', '.join(map(str, unknown))}.")

    @property
    def lock_duration(self) -> timedelta | None:
        return timedelta(minutes=self.lock_minutes) if self.lock_minutes else None


A = ResponseRule.Action
# severity → (actions, lock minutes). High ends the session and locks the
# user for an hour; critical locks the whole vendor organisation until an
# approver lifts it.
DEFAULT_RESPONSES: dict[str, tuple[list[str], int]] = {
    Severity.LOW: ([A.RECORD], 0),
    Severity.MEDIUM: ([A.ALERT], 0),
    Severity.HIGH: ([A.ALERT, A.TERMINATE, A.LOCK_USER], 60),
    Severity.CRITICAL: ([A.ALERT, A.TERMINATE, A.LOCK_VENDOR], 0),
}


def response_for(zone: Zone | None, severity: str) -> tuple[list[str], timedelta | None]:
    """The actions and lock duration a zone applies to a severity."""
    rule = None
    if zone is not None:
        rule = ResponseRule.objects.filter(zone=zone, severity=severity).first()
    if rule is not None:
        return list(rule.actions), rule.lock_duration
    actions, minutes = DEFAULT_RESPONSES.get(severity, ([A.RECORD], 0))
    return list(actions), timedelta(minutes=minutes) if minutes else None


class CommandRule(models.Model):
    """A deny rule for typed or exec'd commands: a regular expression and the
    severity of the signal a match raises. Zone-less rules apply everywhere,
    alongside the built-in defaults in sessions/anomalies/detectors.py."""

    zone = models.ForeignKey(
        Zone, null=True, blank=True, on_delete=models.CASCADE, related_name="command_rules"
    )
    pattern = models.CharField(max_length=300)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.HIGH)
    description = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["zone", "description"]

    def __str__(self) -> str:
        return f"{self.description} ({self.severity})"

    def clean(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValidationError({"pattern": f"Not a valid regular expression: {exc}"})

    @classmethod
    def for_zone(cls, zone: Zone | None) -> models.QuerySet[CommandRule]:
        q = Q(zone=None) | Q(zone=zone) if zone is not None else Q(zone=None)
        return cls.objects.filter(q, is_active=True)


class Gateway(models.Model):
    """A gateway process (SSH gateway or web process holding terminals). It
    heartbeats `seen_at`; the sweep ends the sessions of one that went quiet."""

    name = models.CharField(max_length=120, unique=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    is_accepting = models.BooleanField(
        default=True, help_text="False while its control channel is lost (it refuses sessions)."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_alive(self, at: datetime, dead_after: timedelta) -> bool:
        return self.stopped_at is None and at - self.seen_at < dead_after
