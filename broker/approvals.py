"""Access requests and their quorum approvals, grants, locks.

The workflow, as functions over the models:

    submit_request → pending ─┬─ decide(approve) … policy met → approved + one Grant
                              ├─ decide(deny) → denied      (any deny ends it)
                              ├─ cancel_request → cancelled (the vendor)
                              └─ expire_pending → expired   (window passed undecided)

A zone's approval policy is its ApprovalRules: every (group, count) must be
met. A person counts once, for the first of their groups the policy still
needs, and never on their own request. Decisions serialise on the request
row (SELECT ... FOR UPDATE; SQLite's IMMEDIATE transactions do the same),
and the pending → approved step is a compare-and-set, so exactly one Grant
comes out of a quorum even when two approvers click at the same moment.

Every refusal raises Refused with a sentence to show; nothing is changed
then, and the security-relevant refusals are audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from broker import audit, oversight
from broker.models import (
    AccessRequest,
    Approval,
    ApprovalRule,
    ApproverGroup,
    Device,
    Grant,
    Lock,
    User,
    Vendor,
)

# A request "from the moment it is approved" expires if nobody decides it
# within this time; a request with a fixed window expires when it has passed.
ON_APPROVAL_PENDING_LIMIT = timedelta(days=7)
# How far ahead a window may start.
MAX_LEAD = timedelta(days=90)
# A start typed as "now" in a minute-precision picker is up to a minute old
# when it arrives; allow that much.
START_SLACK = timedelta(minutes=2)


class Refused(Exception):
    """The action was refused; str() is the sentence to show. Nothing changed."""


def _on_commit_task(task_name: str, *args: Any) -> None:
    """Queue a notification task once the current transaction commits."""

    def send() -> None:
        from broker import tasks

        getattr(tasks, task_name).delay(*args)

    transaction.on_commit(send)


# --- requests ---------------------------------------------------------------


def submit_request(
    user: User,
    device: Device,
    *,
    protocols: list[str],
    starts_at: datetime | None,
    duration: timedelta,
    reason: str,
    wants_upload: bool = False,
    wants_download: bool = False,
    source_ip: str | None = None,
    at: datetime | None = None,
) -> AccessRequest:
    """A vendor user asks for `device` over `protocols` for a window.
    `starts_at=None` means "from the moment it is approved"."""
    at = at or timezone.now()
    if not user.is_active or user.vendor_id is None:
        raise Refused("Only vendor accounts can request access to devices.")
    if not user.vendor.is_contract_valid(at):
        raise Refused(f"The contract of {user.vendor.name} has ended.")
    if not device.is_active or not user.vendor.eligible_devices.filter(pk=device.pk).exists():
        audit.record(
            "request.refused",
            actor=user,
            target=f"device:{device.code}",
            source_ip=source_ip,
            data={"why": "not_eligible", "device": device.slug},
        )
        raise Refused("Your organisation may not request access to this device.")
    protocols = sorted(set(protocols))
    if not protocols:
        raise Refused("Choose at least one protocol.")
    unknown = [p for p in protocols if p not in device.protocols]
    if unknown:
        raise Refused(f"{device.slug} cannot be reached over {', '.join(unknown).upper()}.")
    reason = (reason or "").strip()
    if not reason:
        raise Refused("Give a reason or a work-order reference.")
    zone = device.zone
    if duration <= timedelta(0):
        raise Refused("The window must be longer than zero minutes.")
    if duration > zone.max_window:
        hours = zone.max_window.total_seconds() / 3600
        raise Refused(f"The window is longer than {zone.name} allows ({hours:g} hours at most).")
    if starts_at is not None:
        if starts_at < at - START_SLACK:
            raise Refused(
                "The window starts in the past. Pick a later start, "
                "or ask for access from the moment it is approved."
            )
        if starts_at > at + MAX_LEAD:
            raise Refused(f"The window may start at most {MAX_LEAD.days} days ahead.")
    if not zone.approval_rules.exists():
        raise Refused(
            f"{zone.name} has no approval policy yet, so nobody could approve this. "
            "Ask the plant's administrator."
        )
    with transaction.atomic():
        req = AccessRequest.objects.create(
            user=user,
            device=device,
            protocols=protocols,
            starts_at=starts_at,
            duration=duration,
            reason=reason[:2000],
            wants_upload=wants_upload,
            wants_download=wants_download,
            created_at=at,
        )
        audit.record(
            "request.submitted",
            actor=user,
            target=f"request:{req.code}",
            source_ip=source_ip,
            data={
                "device": device.slug,
                "protocols": protocols,
                "starts_at": starts_at,
                "duration_minutes": duration.total_seconds() / 60,
                "upload": wants_upload,
                "download": wants_download,
            },
        )
        _on_commit_task("notify_request_submitted", req.pk)
    return req


def cancel_request(
    user: User, req: AccessRequest, *, source_ip: str | None = None, at: datetime | None = None
) -> None:
    """The vendor user who asked withdraws a pending request."""
    at = at or timezone.now()
    if req.user_id != user.pk:
        raise Refused("Only the person who asked can cancel a request.")
    with transaction.atomic():
        changed = AccessRequest.objects.filter(
            pk=req.pk, status=AccessRequest.Status.PENDING
        ).update(status=AccessRequest.Status.CANCELLED, decided_at=at)
        if not changed:
            req.refresh_from_db()
            raise Refused(
                f"This request is {req.get_status_display().lower()} and cannot be cancelled."
            )
        audit.record(
            "request.cancelled", actor=user, target=f"request:{req.code}", source_ip=source_ip
        )
    req.refresh_from_db()


# --- quorum -------------------------------------------------------------------


@dataclass(frozen=True)
class RuleProgress:
    group: ApproverGroup
    needed: int
    got: int

    @property
    def is_met(self) -> bool:
        return self.got >= self.needed


@dataclass(frozen=True)
class Progress:
    rules: list[RuleProgress]

    @property
    def is_met(self) -> bool:
        return bool(self.rules) and all(r.is_met for r in self.rules)

    @property
    def summary(self) -> str:
        """e.g. "1 of 2: OT security pending" (rules met of rules)."""
        met = sum(1 for r in self.rules if r.is_met)
        pending = [
            r.group.name if r.needed == 1 else f"{r.group.name} ({r.got} of {r.needed})"
            for r in self.rules
            if not r.is_met
        ]
        text = f"{met} of {len(self.rules)}"
        return f"{text}: {', '.join(pending)} pending" if pending else f"{text}: policy met"


def quorum_progress(req: AccessRequest) -> Progress:
    approvals = list(req.approvals.filter(decision=Approval.Decision.APPROVE))
    rules = ApprovalRule.objects.filter(zone_id=req.device.zone_id).select_related("group")
    return Progress(
        [
            RuleProgress(
                rule.group, rule.count, sum(1 for a in approvals if a.group_id == rule.group_id)
            )
            for rule in rules
        ]
    )


def approver_groups_for(user: User, req: AccessRequest) -> list[ApproverGroup]:
    """The policy groups of the request's zone that `user` belongs to."""
    return list(
        ApproverGroup.objects.filter(rules__zone_id=req.device.zone_id, members=user).order_by(
            "name"
        )
    )


def _counting_group(user: User, req: AccessRequest) -> ApproverGroup | None:
    """A person counts once: for the first of their groups still short."""
    groups = approver_groups_for(user, req)
    if not groups:
        return None
    progress = {r.group.pk: r for r in quorum_progress(req).rules}
    for group in groups:
        if not progress[group.pk].is_met:
            return group
    return groups[0]


def requested_window(req: AccessRequest, at: datetime) -> tuple[datetime, datetime]:
    """The window the request asks for, were it approved at `at`."""
    start = req.starts_at or at
    return max(start, at), start + req.duration


class _Refusal(Exception):
    def __init__(self, why: str, message: str, *, audited: bool = True) -> None:
        super().__init__(message)
        self.why, self.message, self.audited = why, message, audited


def decide(
    approver: User,
    req: AccessRequest,
    *,
    approve: bool,
    note: str = "",
    ends_at: datetime | None = None,
    allow_upload: bool = True,
    allow_download: bool = True,
    source_ip: str | None = None,
    at: datetime | None = None,
) -> Approval:
    """Record one approver's decision. A deny ends the request; an approval
    that completes the policy creates the Grant (exactly once).

    `ends_at` shortens the window; `allow_upload`/`allow_download` False turn
    file transfer off. Both only ever narrow what was asked."""
    at = at or timezone.now()
    try:
        with transaction.atomic():
            approval = _decide_locked(
                approver,
                req,
                approve=approve,
                note=note,
                ends_at=ends_at,
                allow_upload=allow_upload,
                allow_download=allow_download,
                source_ip=source_ip,
                at=at,
            )
    except _Refusal as exc:
        # Audited outside the rolled-back transaction, so the record stays.
        if exc.why == "window_passed":
            with transaction.atomic():
                _expire_one(req, at)
        elif exc.audited:
            audit.record(
                "approval.refused",
                actor=approver,
                target=f"request:{req.code}",
                source_ip=source_ip,
                data={"why": exc.why},
            )
        raise Refused(exc.message) from None
    req.refresh_from_db()
    return approval


def _decide_locked(
    approver: User,
    req: AccessRequest,
    *,
    approve: bool,
    note: str,
    ends_at: datetime | None,
    allow_upload: bool,
    allow_download: bool,
    source_ip: str | None,
    at: datetime,
) -> Approval:
    # Serialise decisions on this request: the second approver waits for
    # the first to commit and then sees their approval when counting.
    locked = AccessRequest.objects.select_for_update().get(pk=req.pk)
    if approver.pk == locked.user_id:
        raise _Refusal("own_request", "You cannot decide your own request.")
    if approver.vendor_id is not None:
        # A vendor's people never approve access, their colleagues' least of all.
        raise _Refusal("vendor_approver", "A vendor user cannot approve access requests.")
    group = _counting_group(approver, locked)
    if group is None:
        raise _Refusal("not_an_approver", "You are not an approver for this device's zone.")
    if locked.status != AccessRequest.Status.PENDING:
        raise _Refusal(
            f"request_{locked.status}",
            f"This request is already {locked.get_status_display().lower()}; nothing was changed.",
        )
    if locked.approvals.filter(approver=approver).exists():
        raise _Refusal(
            "decided_twice", "You have already decided this request; a person counts once."
        )
    start, end = requested_window(locked, at)
    if end <= at:
        raise _Refusal("window_passed", "The requested window has passed; the request expired.")
    if approve and ends_at is not None and not (start < ends_at <= end):
        tz = locked.device.zone.tzinfo
        raise _Refusal(
            "bad_end",
            f"The shortened end must fall inside the window "
            f"({start.astimezone(tz):%d %b %H:%M} – {end.astimezone(tz):%d %b %H:%M %Z}).",
            audited=False,
        )
    try:
        with transaction.atomic():
            approval = Approval.objects.create(
                request=locked,
                approver=approver,
                group=group,
                decision=Approval.Decision.APPROVE if approve else Approval.Decision.DENY,
                note=note.strip()[:2000],
                ends_at_limit=ends_at if approve else None,
                allow_upload=allow_upload,
                allow_download=allow_download,
                created_at=at,
            )
    except IntegrityError:
        raise _Refusal(
            "decided_twice", "You have already decided this request; a person counts once."
        ) from None
    audit.record(
        "request.approved_by" if approve else "request.denied_by",
        actor=approver,
        target=f"request:{locked.code}",
        source_ip=source_ip,
        data={
            "group": group.name,
            "note": approval.note,
            "ends_at": approval.ends_at_limit,
            "allow_upload": allow_upload,
            "allow_download": allow_download,
        },
    )
    if not approve:
        _close(locked, AccessRequest.Status.DENIED, at)
        audit.record(
            "request.denied", actor=approver, target=f"request:{locked.code}", source_ip=source_ip
        )
    elif quorum_progress(locked).is_met:
        start, end = granted_window(locked, at)
        if end <= start:
            # An earlier approver's shortened end has passed meanwhile.
            raise _Refusal(
                "window_passed",
                "The window the approvers allowed has already ended; "
                "the request expired. The vendor can ask again.",
            )
        if not _close(locked, AccessRequest.Status.APPROVED, at):
            raise _Refusal(f"request_{locked.status}", "This request was decided meanwhile.")
        grant = _create_grant(locked, start, end, at)
        audit.record(
            "grant.created",
            actor=approver,
            target=f"grant:{grant.code}",
            source_ip=source_ip,
            data={
                "request": str(locked.code),
                "device": locked.device.slug,
                "user": locked.user.username,
                "starts_at": grant.starts_at,
                "ends_at": grant.ends_at,
                "protocols": grant.protocols,
                "upload": grant.allow_upload,
                "download": grant.allow_download,
            },
        )
    _on_commit_task("notify_decision", approval.pk)
    return approval


def _close(req: AccessRequest, status: str, at: datetime) -> bool:
    """pending → status by compare-and-set; True if this call did it."""
    changed = AccessRequest.objects.filter(pk=req.pk, status=AccessRequest.Status.PENDING).update(
        status=status, decided_at=at
    )
    return changed == 1


def granted_window(req: AccessRequest, at: datetime) -> tuple[datetime, datetime]:
    """The window a grant made at `at` would have: the requested one, ended
    at the earliest end any approver chose."""
    start, end = requested_window(req, at)
    limits = [a.ends_at_limit for a in req.approvals.all() if a.ends_at_limit is not None]
    return start, min([end, *limits])


def _create_grant(req: AccessRequest, start: datetime, end: datetime, at: datetime) -> Grant:
    approvals = list(req.approvals.filter(decision=Approval.Decision.APPROVE))
    return Grant.objects.create(
        request=req,
        user=req.user,
        device=req.device,
        protocols=req.protocols,
        starts_at=start,
        ends_at=end,
        created_at=at,
        allow_upload=req.wants_upload and all(a.allow_upload for a in approvals),
        allow_download=req.wants_download and all(a.allow_download for a in approvals),
    )


def _expire_one(req: AccessRequest, at: datetime) -> bool:
    if not _close(req, AccessRequest.Status.EXPIRED, at):
        return False
    audit.record("request.expired", actor="system", target=f"request:{req.code}", at=at)
    _on_commit_task("notify_request_expired", req.pk)
    return True


def expire_pending(at: datetime) -> int:
    """Expire pending requests whose window passed undecided (periodic job)."""
    count = 0
    for req in AccessRequest.objects.filter(status=AccessRequest.Status.PENDING):
        if req.starts_at is not None:
            passed = req.starts_at + req.duration <= at
        else:
            passed = req.created_at + ON_APPROVAL_PENDING_LIMIT <= at
        if passed:
            with transaction.atomic():
                count += _expire_one(req, at)
    return count


# --- grants -------------------------------------------------------------------


def revoke_grant(
    actor: User | None,
    grant: Grant,
    *,
    reason: str,
    source_ip: str | None = None,
    at: datetime | None = None,
    ended_early: bool = False,
) -> bool:
    """End a grant now through sessions.live.revocation.revoke() — the one seam
    that revokes: it writes the revocation by compare-and-set (so nothing
    new can start), audits, and pushes terminate to the live sessions.
    Returns False if the grant was already revoked (nothing changed)."""
    from sessions.live import revocation

    result = revocation.revoke(
        grant,
        reason=reason,
        by=actor,
        source_ip=source_ip,
        at=at,
        data={"ended_early": ended_early},
    )
    if result.changed:
        _on_commit_task("notify_grant_revoked", grant.pk)
    grant.refresh_from_db()
    return result.changed


def end_grant_early(
    user: User, grant: Grant, *, source_ip: str | None = None, at: datetime | None = None
) -> bool:
    """The vendor's "work done": their own grant ends now."""
    if grant.user_id != user.pk:
        raise Refused("Only the person the access was granted to can end it early.")
    if grant.revoked_at is not None or grant.ends_at <= (at or timezone.now()):
        raise Refused("This access has already ended.")
    return revoke_grant(
        user,
        grant,
        reason="work done (ended early by the vendor)",
        source_ip=source_ip,
        at=at,
        ended_early=True,
    )


# --- locks --------------------------------------------------------------------


def create_lock(
    actor: User,
    *,
    vendor: Vendor | None = None,
    user: User | None = None,
    device: Device | None = None,
    grant: Grant | None = None,
    reason: str,
    ttl: timedelta | None = None,
    source_ip: str | None = None,
    at: datetime | None = None,
) -> Lock:
    """Lock exactly one target. While the lock holds authorize() refuses
    everything it names; sessions.live.revocation.revoke() writes it, audits it
    and terminates the live sessions it names."""
    from sessions.live import revocation

    at = at or timezone.now()
    targets = [t for t in (vendor, user, device, grant) if t is not None]
    if len(targets) != 1:
        raise Refused("A lock names exactly one vendor, user, device or grant.")
    reason = (reason or "").strip()
    if not reason:
        raise Refused("Say why you lock it: the vendor sees the reason.")
    if ttl is not None and ttl <= timedelta(0):
        raise Refused("The lock's duration must be positive (or leave it empty for no expiry).")
    if not oversight.may_lock(
        actor, vendor=vendor, person=user, device=device or (grant.device if grant else None)
    ):
        raise Refused(
            "You may lock only devices of your zones, and people or companies with "
            "access or requests there."
        )
    result = revocation.revoke(
        targets[0],
        reason=reason,
        by=actor,
        source_ip=source_ip,
        lock=True,
        until=at + ttl if ttl else None,
        at=at,
    )
    assert result.lock is not None
    return result.lock


def lift_lock(
    actor: User, lock: Lock, *, source_ip: str | None = None, at: datetime | None = None
) -> bool:
    at = at or timezone.now()
    if not oversight.may(actor, oversight.LIFT, lock):
        raise Refused("You may lift only locks on your zones' devices and on their vendors.")
    with transaction.atomic():
        changed = Lock.objects.filter(pk=lock.pk, lifted_at=None).update(
            lifted_at=at, lifted_by=actor
        )
        if not changed:
            return False
        audit.record(
            "lock.lifted",
            actor=actor,
            target=f"lock:{lock.code}",
            source_ip=source_ip,
            data={"names": lock.target_label},
        )
    lock.refresh_from_db()
    return True


def describe_window(req_or_grant: AccessRequest | Grant) -> str:
    """The window in the plant's local time, for pages and emails."""
    tz = req_or_grant.device.zone.tzinfo
    if isinstance(req_or_grant, Grant):
        s, e = req_or_grant.starts_at, req_or_grant.ends_at
    elif req_or_grant.starts_at is None:
        hours = req_or_grant.duration.total_seconds() / 3600
        return f"{hours:g} h from approval"
    else:
        s, e = req_or_grant.starts_at, req_or_grant.starts_at + req_or_grant.duration
    s, e = s.astimezone(tz), e.astimezone(tz)
    end = e.strftime("%H:%M %Z") if s.date() == e.date() else e.strftime("%d %b %Y %H:%M %Z")
    return f"{s:%d %b %Y %H:%M} – {end}"


__all__ = [
    "Refused",
    "submit_request",
    "cancel_request",
    "decide",
    "quorum_progress",
    "Progress",
    "expire_pending",
    "revoke_grant",
    "end_grant_early",
    "create_lock",
    "lift_lock",
    "approver_groups_for",
    "describe_window",
]
