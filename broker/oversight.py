"""The one oversight rule: may this person do ACTION to this session, grant,
request, signal, device, zone or lock — and the querysets built on it.

Every page, websocket and `visible_to` asks here, so tightening who sees or
acts on what changes this module only. Deny by default: each branch is an
allow-list of (role, action) pairs.

- admins (staff or superuser): every action on everything;
- auditors: view, watch and export everything (they read, never act);
- approvers: every action on what belongs to a zone whose policy names one of
  their groups; locks on a person or company only where that person or
  company has grants or requests in such a zone;
- vendors: view their own sessions, grants and requests — a vendor admin
  their company's — and the devices their company is eligible for.

It imports no model classes (the models import it); lookups go through the
relations' names and `type(target).objects`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Q, QuerySet

if TYPE_CHECKING:
    from broker.models import User

VIEW, WATCH, MODERATE, TERMINATE, EXPORT, LOCK, LIFT, CONFIGURE = (
    "view",
    "watch",
    "moderate",
    "terminate",
    "export",
    "lock",
    "lift",
    "configure",
)
ACTIONS = frozenset({VIEW, WATCH, MODERATE, TERMINATE, EXPORT, LOCK, LIFT, CONFIGURE})
AUDITOR_ACTIONS = frozenset({VIEW, WATCH, EXPORT})
APPROVER = "approval_rules__group__members"

# How each kind of target reaches its zone and its person.
ZONE_PATH = {
    "session": "device__zone__",
    "grant": "device__zone__",
    "accessrequest": "device__zone__",
    "signal": "device__zone__",
    "device": "zone__",
    "zone": "",
}
OWNED = frozenset({"session", "grant", "accessrequest"})
NOTHING = Q(pk__in=[])


def _active(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def _zone_q(user: User, path: str) -> Q:
    return Q(**{f"{path}{APPROVER}": user})


def _has_business_q(user: User, person_path: str) -> Q:
    """`person_path` (a User relation) has grants or requests in a zone `user` approves."""
    return Q(**{f"{person_path}grants__device__zone__{APPROVER}": user}) | Q(
        **{f"{person_path}access_requests__device__zone__{APPROVER}": user}
    )


def _lock_q(user: User) -> Q:
    """Locks `user` as an approver may see, set and lift (by target)."""
    return (
        _zone_q(user, "device__zone__")
        | _zone_q(user, "grant__device__zone__")
        | _has_business_q(user, "user__")
        | _has_business_q(user, "vendor__users__")
    )


def rule(user: Any, action: str, kind: str) -> Q | None:
    """The rows of `kind` (a model_name) on which `user` may do `action`:
    None means all of them, NOTHING none."""
    if action not in ACTIONS or not _active(user):
        return NOTHING
    if user.is_staff or user.is_superuser:
        return None
    if user.is_auditor and action in AUDITOR_ACTIONS:
        return None
    if kind == "lock":
        return _lock_q(user) if action in {VIEW, LIFT} else NOTHING
    q = NOTHING
    if kind in ZONE_PATH:
        q = _zone_q(user, ZONE_PATH[kind])
    if action == VIEW and user.vendor_id:
        if kind in OWNED:
            if user.is_vendor_admin:
                q |= Q(user__vendor_id=user.vendor_id)
            else:
                q |= Q(user=user)
        elif kind == "device":
            q |= Q(eligible_vendors=user.vendor_id, is_active=True)
    return q


def visible(user: Any, qs: QuerySet, action: str = VIEW) -> QuerySet:
    """`qs` narrowed to the rows `user` may do `action` on."""
    q = rule(user, action, qs.model._meta.model_name)
    if q is None:
        return qs.all()
    if q == NOTHING:
        return qs.none()
    return qs.filter(pk__in=qs.model.objects.filter(q).values("pk"))


def may(user: Any, action: str, target: Any) -> bool:
    """May `user` do `action` to `target` (a saved row of a kind above)?"""
    if target is None or target.pk is None:
        return False
    q = rule(user, action, target._meta.model_name)
    if q is None:
        return True
    if q == NOTHING:
        return False
    return type(target).objects.filter(q, pk=target.pk).exists()


def may_lock(user: Any, *, vendor: Any = None, person: Any = None, device: Any = None) -> bool:
    """May `user` set a lock on this vendor, person or device (a grant's lock
    follows its device)?"""
    if not _active(user):
        return False
    if user.is_staff or user.is_superuser:
        return True
    if device is not None:
        return may(user, CONFIGURE, device)
    if person is not None:
        return type(person).objects.filter(_has_business_q(user, ""), pk=person.pk).exists()
    if vendor is not None:
        return type(vendor).objects.filter(_has_business_q(user, "users__"), pk=vendor.pk).exists()
    return False


def approver_zones(user: Any, zones: QuerySet) -> QuerySet:
    """The zones (from `zones`, e.g. Zone.objects.all()) whose policy names
    one of `user`'s groups — membership, not admin reach."""
    if not _active(user):
        return zones.none()
    return zones.filter(_zone_q(user, "")).distinct()
