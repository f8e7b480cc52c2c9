"""`manage.py seed_demo [--json]`: demo data for trying Airlock on one machine.

Creates the demo people: a vendor user of "Acme Automation", two approvers in
two different approver groups ("Plant operations", "OT security"), an auditor
and an admin, each with a confirmed TOTP device, and prints every account's
username, password and TOTP secret (base32 and otpauth:// URI). `--json`
prints the same for scripts.

Idempotent: passwords and TOTP keys are generated once into
var/demo/accounts.json (mode 0600) and reused, so a second run gives the same
accounts, passwords and secrets (and repairs anything changed in between).

Later parts add themselves to PARTS: each is a pair of functions,
seed_<part>(demo) which creates its objects and adds keys to demo.out (the
JSON output), and show_<part>(out) which returns the lines printed for
people. Parts run in order in one transaction; a part may read what earlier
parts put in demo.out.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axes.models import AccessAttempt
from axes.utils import reset
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from broker import audit
from broker.models import ApproverGroup, TOTPDevice, User, Vendor

DEMO_VENDOR = "Acme Automation"
# Demo people carry this e-mail domain (reserved: it never delivers), which
# is how seed_demo tells its own accounts from real ones it must not touch.
DEMO_EMAIL_DOMAIN = "demo.airlock.invalid"
TOTP_DEVICE_NAME = "Demo authenticator"


@dataclass(frozen=True)
class Person:
    role: str
    username: str
    name: str
    vendor: str | None = None
    groups: tuple[str, ...] = ()
    is_auditor: bool = False
    is_admin: bool = False


PEOPLE = (
    Person("vendor", "vendor", "Vera Vendor", vendor=DEMO_VENDOR),
    Person("approver", "operations", "Otto Operations", groups=("Plant operations",)),
    Person("approver", "security", "Sam Security", groups=("OT security",)),
    Person("auditor", "auditor", "Alex Auditor", is_auditor=True),
    Person("admin", "admin", "Ada Admin", is_admin=True),
)


def demo_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo"


@dataclass
class Demo:
    """What the parts share: the output being built and the demo's secrets,
    kept in var/demo/accounts.json so reruns reuse them."""

    out: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    path: Path = field(default_factory=lambda: demo_dir() / "accounts.json")

    @classmethod
    def load(cls) -> Demo:
        demo = cls(out={"portal": settings.PORTAL_URL})
        if demo.path.exists():
            try:
                demo.secrets = dict(json.loads(demo.path.read_text())["secrets"])
            except (ValueError, KeyError, TypeError):
                raise CommandError(
                    f"{demo.path} is not a demo secrets file; move it away "
                    "to generate new demo secrets"
                ) from None
        return demo

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """The secret called `name`, made once and then remembered."""
        if name not in self.secrets:
            self.secrets[name] = make()
        return self.secrets[name]

    def save(self) -> None:
        """Write the secrets readable by the owner only, atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"secrets": self.secrets}, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, self.path)


# --- people ---------------------------------------------------------------------------


def new_password() -> str:
    # 18 URL-safe characters (~108 bits): passes every password validator and
    # survives copy-and-paste from a terminal.
    return secrets.token_urlsafe(14)


def new_totp_key() -> str:
    return secrets.token_hex(20)


def seed_people(demo: Demo) -> None:
    vendor, _ = Vendor.objects.get_or_create(name=DEMO_VENDOR)
    accounts = []
    for person in PEOPLE:
        password = demo.secret(f"password:{person.username}", new_password)
        key = demo.secret(f"totp:{person.username}", new_totp_key)
        user = _demo_user(person, vendor if person.vendor else None, password)
        device = _demo_totp_device(user, key)
        for name in person.groups:
            ApproverGroup.objects.get_or_create(name=name)[0].members.add(user)
        accounts.append(
            {
                "role": person.role,
                "username": user.username,
                "name": person.name,
                "password": password,
                "totp_secret": base64.b32encode(device.bin_key).decode().rstrip("="),
                "otpauth_uri": device.config_url,
                "groups": list(person.groups),
                "vendor": person.vendor,
            }
        )
    demo.out["accounts"] = accounts


def _demo_user(person: Person, vendor: Vendor | None, password: str) -> User:
    email = f"{person.username}@{DEMO_EMAIL_DOMAIN}"
    user = User.objects.filter(username=person.username).first()
    if user is not None and user.email != email:
        raise CommandError(
            f"A user called {person.username!r} exists and is not a demo account; "
            "seed_demo leaves it alone. Use a fresh database for the demo."
        )
    first, _, last = person.name.partition(" ")
    user = user or User(username=person.username, email=email)
    created = user.pk is None
    user.first_name, user.last_name = first, last
    user.vendor = vendor
    user.is_auditor = person.is_auditor
    user.is_staff = user.is_superuser = person.is_admin
    user.is_active = True
    if created or not user.check_password(password):
        user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    if created:
        audit.record(
            "user.created",
            actor="system",
            target=f"user:{user.username}",
            data={"by": "seed_demo", "roles": [person.role]},
        )
    # The demo accounts must be usable right away, even after a lockout.
    if AccessAttempt.objects.filter(username=user.username).exists():
        reset(username=user.username)
    return user


def _demo_totp_device(user: User, key: str) -> TOTPDevice:
    # The printed secret must be the one that works: one confirmed device
    # with the remembered key, nothing else.
    TOTPDevice.objects.filter(user=user).exclude(name=TOTP_DEVICE_NAME).delete()
    device, _ = TOTPDevice.objects.get_or_create(
        user=user, name=TOTP_DEVICE_NAME, defaults={"key": key, "confirmed": True}
    )
    if device.key != key or not device.confirmed:
        device.key, device.confirmed = key, True
        device.save()
    return device


def show_people(out: dict[str, Any]) -> list[str]:
    lines = [f"Portal: {out['portal']}/", ""]
    for account in out["accounts"]:
        where = account["vendor"] or ", ".join(account["groups"])
        lines += [
            f"{account['role']}: {account['name']}" + (f" ({where})" if where else ""),
            f"  username     {account['username']}",
            f"  password     {account['password']}",
            f"  TOTP secret  {account['totp_secret']}",
            f"  TOTP URI     {account['otpauth_uri']}",
            "",
        ]
    lines.append("Sign in with a username and password, then the 6-digit code an authenticator")
    lines.append("app shows for the account's TOTP secret (add it by secret or URI), or:")
    lines.append("  oathtool --totp -b SECRET")
    return lines


def seed_inventory(demo: Demo) -> None:
    """The demo plant (sessions/demo/inventory.py): a zone needing 1 of Plant operations
    AND 1 of OT security, the simulated PLC with its vaulted credential, and
    the demo vendor eligible for it."""
    from sessions.demo.inventory import seed_inventory as build_inventory

    demo.out["inventory"] = build_inventory(Vendor.objects.get(name=DEMO_VENDOR))


def show_inventory(out: dict[str, Any]) -> list[str]:
    inv = out["inventory"]
    device = inv["device"]
    return [
        f"Demo plant: {inv['site']} / {inv['zone']} ({inv['timezone']}), policy: {inv['policy']}",
        f"  device {device['slug']} ({device['kind']}, simulated) at {device['ssh']}; "
        f"{DEMO_VENDOR} may request it.",
        "  Try it: sign in as the vendor, request demo-plc, then approve as operations and as security.",
    ]


def seed_gateway(demo: Demo) -> None:
    """The SSH path (sessions/demo/seed.py): the simulated PLC's host key pinned, a
    demo vendor key pair in var/demo/, an approved 8-hour grant, and the ssh
    command. seed_demo composes every part, so it may reach into sessions."""
    from sessions.demo.seed import seed_gateway as build_gateway

    demo.out.update(build_gateway(User.objects.get(username="vendor")))


def show_gateway(out: dict[str, Any]) -> list[str]:
    gw = out["gateway"]
    return [
        f"SSH gateway: {gw['host']}:{gw['port']}, host key {gw['host_key_fingerprint']}",
        f"  The demo vendor's key is {out['vendor_ssh_key']} and holds an approved grant on demo-plc",
        f"  until {out['grant']['ends_at']}. Start the simulated PLC (make run DEMO=1 does), then:",
        f"  {out['ssh_command']}",
    ]


def seed_sensor(demo: Demo) -> None:
    """A demo sensor for the signed signal endpoint (sessions/anomalies/intake.py):
    its secret is remembered like the passwords, so reruns print the same."""
    from broker.models import Device
    from sessions.models import Sensor

    secret = demo.secret("sensor", Sensor.new_secret)
    sensor, _ = Sensor.objects.get_or_create(
        name="demo-sensor", defaults={"description": "Demo sensor (seed_demo)"}
    )
    if not sensor.key_id or sensor.secret() != secret or not sensor.is_active:
        sensor.set_secret(secret)
        sensor.is_active = True
        sensor.save()
    # Sensors are scoped to zones (deny by default): the demo sensor may
    # report about the demo plant's zone only.
    sensor.zones.add(Device.objects.get(slug=demo.out["inventory"]["device"]["slug"]).zone)
    demo.out["sensor"] = {"name": sensor.name, "secret": secret}


def show_sensor(out: dict[str, Any]) -> list[str]:
    sensor = out["sensor"]
    return [
        f"Demo sensor: {sensor['name']}, secret {sensor['secret']}",
        "  Post a signal (it goes through the zone's response policy):",
        f"  python manage.py sendsignal --url {out['portal']} --sensor {sensor['name']} "
        "--secret-env AIRLOCK_SENSOR_SECRET --device demo-plc --severity low --kind demo-test",
        f"  (with AIRLOCK_SENSOR_SECRET={sensor['secret']} in the environment)",
    ]


def seed_hmi(demo: Demo) -> None:
    """The browser RDP path (sessions/demo/rdp.py): the simulated HMI demo-hmi
    in the demo zone, its certificate pinned, its vaulted RDP credential and
    an approved rdp grant for the demo vendor."""
    from sessions.demo.rdp import seed_hmi as build_hmi

    demo.out["hmi"] = build_hmi(User.objects.get(username="vendor"))


def show_hmi(out: dict[str, Any]) -> list[str]:
    hmi = out["hmi"]
    lines = [
        f"Demo HMI: {hmi['slug']} ({hmi['kind']}, simulated remote desktop) at {hmi['rdp']}, "
        f"certificate pinned {hmi['certificate_sha256'][:23]}…"
    ]
    if hmi["missing_packages"]:
        lines.append(
            "  Optional: to run it, install (as root) "
            f"apt-get install {' '.join(hmi['missing_packages'])}; make run DEMO=1 then starts it."
        )
    else:
        lines.append("  make run DEMO=1 starts it (or `manage.py rundemordp`).")
    lines.append(f"  As the vendor, open the remote desktop: {hmi['url']}")
    return lines


# Each part: (seed_<part>(demo), show_<part>(out) -> lines).
PARTS: list[tuple[Callable[[Demo], None], Callable[[dict[str, Any]], list[str]]]] = [
    (seed_people, show_people),
    (seed_inventory, show_inventory),
    # Before the gateway part, whose "devices" lists every demo device.
    (seed_hmi, show_hmi),
    (seed_gateway, show_gateway),
    (seed_sensor, show_sensor),
]


def seed() -> dict[str, Any]:
    """Run every part; return the output (what --json prints)."""
    demo = Demo.load()
    with transaction.atomic():
        for seed_part, _ in PARTS:
            seed_part(demo)
        # Remember new secrets only once the database holds them too.
        demo.save()
    return demo.out


class Command(BaseCommand):
    help = "Create (or repair) the demo accounts and print their passwords and TOTP secrets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the demo data as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        # Parts may print while seeding (the console e-mail backend prints
        # the demo's notifications): stdout carries the output alone, so
        # `seed_demo --json` stays parseable.
        with contextlib.redirect_stdout(sys.stderr):
            out = seed()
        if options["json"]:
            self.stdout.write(json.dumps(out, indent=2))
            return
        self.stdout.write("Airlock demo data. These accounts are for trying Airlock on this")
        self.stdout.write("machine only; never create them on a system that matters.")
        self.stdout.write(
            f"(Secrets are kept in {demo_dir() / 'accounts.json'}; run seed_demo again to show them.)"
        )
        self.stdout.write("")
        for _, show_part in PARTS:
            for line in show_part(out):
                self.stdout.write(line)
            self.stdout.write("")
