"""The append-only, hash-chained audit trail, and the notifications already sent."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class SentNotification(models.Model):
    """One email that was sent (or is being sent). Notification tasks
    create the row before sending, so a retried task does not send twice."""

    key = models.CharField(
        max_length=200, help_text="what the email is about, e.g. request.new:<code>"
    )
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
    actor = models.CharField(
        max_length=150, blank=True, help_text="username, sensor:NAME or system"
    )
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
