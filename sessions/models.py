"""What happened on the wire: live and finished sessions, the commands typed
in them and the files that crossed them.

A Session row is written when a vendor connection has passed authorize() and
the device has accepted Airlock's login; it is closed once, by compare-and-set
on `ended_at`, whoever ends it first (the gateway, the sweep, revoke()).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models
from django.utils import timezone

from broker import oversight
from broker.models import Device, Grant, Protocol, User


class SessionQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> SessionQuerySet:
        """Rows `user` may see: the one oversight rule (broker/oversight.py)."""
        return oversight.visible(user, self)

    def live(self) -> SessionQuerySet:
        return self.filter(ended_at=None)


class Session(models.Model):
    """One vendor connection to one device through one front door."""

    class ClientKind(models.TextChoices):
        NATIVE = "native", "Native client"
        BROWSER = "browser", "Browser"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="sessions")
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="sessions")
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="sessions")
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.SSH)
    client_kind = models.CharField(
        max_length=8, choices=ClientKind.choices, default=ClientKind.NATIVE
    )
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)
    end_reason = models.CharField(max_length=300, blank=True)
    bytes_in = models.BigIntegerField(default=0, help_text="Bytes from the vendor to the device.")
    bytes_out = models.BigIntegerField(default=0, help_text="Bytes from the device to the vendor.")
    recording = models.CharField(
        max_length=300, blank=True, help_text="Name of the recording in the recordings store."
    )
    recording_sha256 = models.CharField(max_length=64, blank=True)
    recording_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention deleted the recording (the hash stays)."
    )
    artefacts = models.JSONField(
        default=dict,
        blank=True,
        help_text="SHA-256 of each side file of the recording, by name (e.g. input_log).",
    )
    gateway_id = models.CharField(max_length=120, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.user} → {self.device} {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def is_live(self) -> bool:
        return self.ended_at is None

    def close(
        self,
        reason: str,
        *,
        at: datetime | None = None,
        bytes_in: int | None = None,
        bytes_out: int | None = None,
        recording_sha256: str | None = None,
    ) -> bool:
        """End the session once. Returns True only for the caller that ended it."""
        at = at or timezone.now()
        changes: dict = {"ended_at": at, "end_reason": reason[:300], "last_seen_at": at}
        if bytes_in is not None:
            changes["bytes_in"] = bytes_in
        if bytes_out is not None:
            changes["bytes_out"] = bytes_out
        if recording_sha256 is not None:
            changes["recording_sha256"] = recording_sha256
        won = Session.objects.filter(pk=self.pk, ended_at=None).update(**changes) == 1
        if won:
            for name, value in changes.items():
                setattr(self, name, value)
        return won

    def touch(self, *, bytes_in: int, bytes_out: int, at: datetime | None = None) -> None:
        """Heartbeat: the gateway still holds this session."""
        Session.objects.filter(pk=self.pk, ended_at=None).update(
            last_seen_at=at or timezone.now(), bytes_in=bytes_in, bytes_out=bytes_out
        )

    def group_names(self) -> list[str]:
        """The channel-layer groups whose `session.terminate` ends this session."""
        names = [
            f"airlock.session.{self.code}",
            f"airlock.user.{self.user.code}",
            f"airlock.device.{self.device.code}",
            f"airlock.grant.{self.grant.code}",
        ]
        if self.user.vendor_id:
            names.append(f"airlock.vendor.{self.user.vendor.code}")
        return names


class Command(models.Model):
    """A command the vendor ran: an exec request exactly, or an interactive
    line reconstructed from keystrokes. `t` is seconds from session start."""

    class Kind(models.TextChoices):
        EXEC = "exec", "Exec request"
        LINE = "line", "Typed line"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="commands")
    t = models.FloatField(help_text="Seconds from the start of the session.")
    text = models.TextField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LINE)

    class Meta:
        ordering = ["session", "t", "id"]

    def __str__(self) -> str:
        return self.text[:80]


class FileTransfer(models.Model):
    """A file that crossed (or was refused at) the gateway over SFTP/scp."""

    class Direction(models.TextChoices):
        UPLOAD = "upload", "Upload (to the device)"
        DOWNLOAD = "download", "Download (from the device)"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="file_transfers")
    path = models.CharField(max_length=1024)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField(default=timezone.now)
    allowed = models.BooleanField(default=True)

    class Meta:
        ordering = ["session", "at", "id"]

    def __str__(self) -> str:
        return f"{self.direction} {self.path}"


# Live control (issue 7) keeps its models in their own module; importing them
# here is what registers them with the app.
from sessions.anomalies.models import (  # noqa: E402,F401
    CommandRule,
    Gateway,
    ResponseRule,
    Sensor,
    Signal,
    SignalReceipt,
)
