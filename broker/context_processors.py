"""Template context for every page: the portal address, the user's roles
and the role-aware navigation."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# Per role, the pages in its navigation: (label, URL name). An entry whose
# URL name is not routed (yet) is left out, so the pages of later features
# appear in the navigation as soon as their routes exist.
NAVIGATION: dict[str, list[tuple[str, str]]] = {
    "vendor": [
        ("Devices", "device-list"),
        ("Requests", "request-list"),
        ("Grants", "grant-list"),
        ("SSH keys", "sshkey-list"),
        ("Sessions", "session-list"),
    ],
    "approver": [
        ("Queue", "approval-queue"),
        ("Active grants", "grant-list"),
        ("Locks", "lock-list"),
        ("Live sessions", "live-sessions"),
        ("Signals", "signals"),
        ("Recordings", "session-list"),
    ],
    "auditor": [
        ("Requests", "request-list"),
        ("Grants", "grant-list"),
        ("Audit trail", "audit-trail"),
        ("Sessions", "session-list"),
        ("Signals", "signals"),
    ],
    "admin": [
        ("Invite", "invite"),
        ("Admin", "admin:index"),
    ],
}


def navigation(roles: list[str], current_path: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    seen: set[str] = set()
    for role in roles:
        for label, name in NAVIGATION.get(role, []):
            try:
                url = reverse(name)
            except NoReverseMatch:
                continue
            if url in seen:
                continue
            seen.add(url)
            active = current_path == url or (url != "/" and current_path.startswith(url))
            items.append({"label": label, "url": url, "active": active})
    return items


def airlock(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    # Only a fully signed-in (OTP-verified) session sees the navigation.
    verified = signed_in and getattr(user, "is_verified", lambda: False)()
    roles = user.roles if signed_in else []
    return {
        "portal_url": settings.PORTAL_URL,
        "roles": roles,
        "is_verified": verified,
        "nav_items": navigation(roles, request.path) if verified else [],
    }
