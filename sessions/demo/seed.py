"""The demo's SSH path, so a newcomer connects within minutes:

- the simulated PLC's host key (sessions/demo/device.py) pinned on demo-plc;
- a demo vendor key pair in var/demo/ (private key 0600) registered for the
  demo vendor;
- an approved grant for the demo vendor on demo-plc for the next 8 hours,
  made through the real request/approval workflow (so it is audited like
  any other);
- the facts `seed_demo --json` prints: the gateway's address and host key
  fingerprint, the devices, the key path and the exact ssh command.

Idempotent: the key pair is generated once; a new grant is made only when
the demo vendor holds none on demo-plc lasting at least another hour.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from broker import approvals, sshkeys
from broker.models import Device, Grant, SSHPublicKey, User
from sessions.demo import device as demodevice
from sessions.demo.inventory import DEMO_DEVICE_SLUG
from sessions.doors.ssh.gateway import host_key_fingerprint, private_key_file

VENDOR_KEY_NAME = "vendor_ed25519"
DEMO_APPROVERS = ("operations", "security")


def vendor_key_path() -> Path:
    return Path(settings.VAR_DIR) / "demo" / VENDOR_KEY_NAME


def _vendor_key() -> str:
    """The demo vendor's key pair; returns the public key line."""
    path = vendor_key_path()
    key = private_key_file(path, "airlock-demo-vendor")
    pub = path.with_name(path.name + ".pub")
    if not pub.exists():
        pub.write_bytes(key.export_public_key())
    return pub.read_text().strip()


def _register_key(user: User, line: str) -> None:
    parsed = sshkeys.parse(line)
    if not SSHPublicKey.objects.filter(fingerprint=parsed.fingerprint).exists():
        sshkeys.register(user, line, name="Demo key (var/demo)")


def demo_grant(user: User, device: Device, *, protocols: list[str], reason: str) -> Grant:
    """The demo vendor's approved grant on `device` (sessions/demo/rdp.py
    uses it for demo-hmi): a new one only when none lasts another hour."""
    now = timezone.now()
    for grant in Grant.objects.filter(
        user=user,
        device=device,
        revoked_at=None,
        starts_at__lte=now,
        ends_at__gte=now + timedelta(hours=1),
    ).order_by("-ends_at"):
        if set(protocols) <= set(grant.protocols):
            return grant
    req = approvals.submit_request(
        user,
        device,
        protocols=protocols,
        starts_at=None,
        duration=timedelta(hours=8),
        reason=reason,
        wants_upload=True,
        wants_download=True,
    )
    for username in DEMO_APPROVERS:
        approvals.decide(
            User.objects.get(username=username),
            req,
            approve=True,
            note="Approved by seed_demo for the demo",
        )
    req.refresh_from_db()
    return req.grant


def seed_gateway(vendor_user: User) -> dict[str, Any]:
    device = Device.objects.get(slug=DEMO_DEVICE_SLUG)
    line = demodevice.host_key_line()
    if device.ssh_host_key.strip() != line:
        Device.objects.filter(pk=device.pk).update(ssh_host_key=line)
    _register_key(vendor_user, _vendor_key())
    grant = demo_grant(
        vendor_user, device, protocols=["ssh"], reason="Demo: try Airlock's SSH gateway"
    )
    host, port = settings.GATEWAY_PUBLIC_HOST, settings.GATEWAY_PUBLIC_PORT
    key_path = vendor_key_path().resolve()
    base = Path(settings.BASE_DIR).resolve()
    key_rel = str(key_path.relative_to(base)) if key_path.is_relative_to(base) else str(key_path)
    return {
        "gateway": {"host": host, "port": port, "host_key_fingerprint": host_key_fingerprint()},
        "devices": [
            {"slug": d.slug, "name": d.name} for d in Device.objects.filter(is_active=True)
        ],
        "vendor_ssh_key": key_rel,
        "ssh_command": ssh_command(vendor_user.username, device.slug, key=key_rel),
        "grant": {"code": str(grant.code), "ends_at": grant.ends_at.isoformat()},
    }


def ssh_command(username: str, slug: str, *, key: str | None = None) -> str:
    host, port = settings.GATEWAY_PUBLIC_HOST, settings.GATEWAY_PUBLIC_PORT
    identity = f"-i {key} " if key else ""
    return f"ssh {identity}-p {port} {username}+{slug}@{host}"
