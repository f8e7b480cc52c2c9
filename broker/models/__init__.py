"""Who may reach what: people, vendors, the plant inventory, the vault,
requests, approvals, grants and locks, the audit chain and second factors.

One module per concept; this package re-exports every model so that
`from broker.models import Grant` and the migrations keep working.
Rules about one row live on the model; workflows that span rows live in
concept modules (broker/access.py, approvals.py, audit.py, vault.py).
"""

from broker.models.audit import (
    AppendOnlyError,
    AuditChainHead,
    AuditEvent,
    AuditEventQuerySet,
    SentNotification,
)
from broker.models.locks import Lock, LockQuerySet
from broker.models.otp import StaticDevice, StaticToken, TOTPDevice
from broker.models.people import ApproverGroup, Invitation, SSHPublicKey, User, Vendor
from broker.models.plant import (
    ApprovalRule,
    Credential,
    Device,
    DeviceQuerySet,
    Protocol,
    Site,
    Zone,
    slug_validator,
    validate_cidrs,
    validate_timezone,
)
from broker.models.requests import (
    AccessRequest,
    AccessRequestQuerySet,
    Approval,
    Grant,
    GrantQuerySet,
)

__all__ = [
    "validate_timezone",
    "validate_cidrs",
    "Protocol",
    "Site",
    "Zone",
    "ApprovalRule",
    "DeviceQuerySet",
    "Device",
    "Credential",
    "SSHPublicKey",
    "slug_validator",
    "Vendor",
    "User",
    "ApproverGroup",
    "Invitation",
    "AccessRequestQuerySet",
    "AccessRequest",
    "Approval",
    "GrantQuerySet",
    "Grant",
    "LockQuerySet",
    "Lock",
    "SentNotification",
    "AppendOnlyError",
    "AuditEventQuerySet",
    "AuditEvent",
    "AuditChainHead",
    "TOTPDevice",
    "StaticDevice",
    "StaticToken",
]
