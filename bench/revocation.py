"""Revocation latency across processes, and the sweep's cost.

    .venv/bin/python bench/revocation.py [--sizes 10,100,500] [--redis-url URL]
        [--database-url postgres://...] [--sweep-grants 10000]

What it runs, all on this machine:
- a device: an asyncssh server in this process (password login, each exec
  waits for its channel to close), so the device side's close is observed
  where it happens;
- the SSH gateway: `manage.py rungateway`, a separate process;
- the web app: `uvicorn broker.asgi:application`, a separate process;
- vendors: N asyncssh client connections from this process through the
  gateway, each running one long command on the device.

Both Airlock processes share the database and Redis (channels-redis
pub/sub), as in production. For each of the N live sessions, in random
order, one signed generic signal naming the session is POSTed (the zone's
policy for "high" is set to terminate only), and the script measures, from
the moment the POST's response arrived:
- the vendor's client seeing its connection closed (EOF);
- the device side's connection closing.
Negative values mean the close arrived before the HTTP response did.

Then the sweep: 10,000 grants and as many live session rows as the largest
size, timing sweep.run() in this process.

Prints p50, p99 and max per size. Nothing here is a test: it only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_django(var_dir: str, database_url: str, redis_url: str) -> None:
    os.environ["AIRLOCK_VAR_DIR"] = var_dir
    os.environ["REDIS_URL"] = redis_url
    os.environ["AIRLOCK_LOG_LEVEL"] = "WARNING"
    os.environ["AIRLOCK_GATEWAY_MAX_UNAUTH_PER_ADDRESS"] = "64"
    os.environ["AIRLOCK_GATEWAY_MAX_UNAUTH_TOTAL"] = "2000"
    os.environ["AIRLOCK_HEARTBEAT_SECONDS"] = "30"
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- the device ------------------------------------------------------------------


class DeviceServer:
    """An asyncssh server standing in for a PLC. Records when each
    connection closes (the device side of a session)."""

    def __init__(self) -> None:
        self.closed_at: dict[int, float] = {}  # gateway's source port → close time
        self.server: Any = None
        self.port = 0
        self.key: Any = None

    async def start(self) -> None:
        import asyncssh

        self.key = asyncssh.generate_private_key("ssh-ed25519")
        device = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: Any) -> None:
                self.peer_port = conn.get_extra_info("peername")[1]

            def connection_lost(self, exc: Exception | None) -> None:
                device.closed_at[self.peer_port] = time.perf_counter()

            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == "bench" and password == "bench-device-pass"

        async def handle(process: Any) -> None:
            try:
                await process.stdin.read()
            except Exception:
                pass
            process.exit(0)

        self.server = await asyncssh.create_server(
            Server,
            "127.0.0.1",
            0,
            server_host_keys=[self.key],
            process_factory=handle,
            encoding=None,
            encryption_algs=["aes128-gcm@openssh.com"],
        )
        self.port = self.server.sockets[0].getsockname()[1]

    def host_key_line(self) -> str:
        return self.key.export_public_key("openssh").decode().strip()


# --- the world ---------------------------------------------------------------------


def make_world(device: DeviceServer, n_max: int) -> dict[str, Any]:
    from datetime import timedelta

    import asyncssh
    from django.utils import timezone

    from broker import sshkeys, vault
    from broker.models import (
        Credential,
        Device,
        Grant,
        Site,
        SSHPublicKey,
        TOTPDevice,
        User,
        Vendor,
        Zone,
    )
    from sessions.models import ResponseRule, Sensor

    site = Site.objects.create(name="Bench plant", slug="bench")
    zone = Zone.objects.create(site=site, name="Bench zone", slug="bench-zone")
    # One action, so the measurement is the terminate path alone.
    ResponseRule.objects.create(zone=zone, severity="high", actions=["terminate"])
    plc = Device.objects.create(
        slug="bench-plc",
        name="Bench PLC",
        zone=zone,
        ssh_host="127.0.0.1",
        ssh_port=device.port,
        ssh_host_key=device.host_key_line(),
    )
    kid, blob = vault.seal("bench-device-pass")
    Credential.objects.create(
        device=plc, protocol="ssh", username="bench", key_id=kid, ciphertext=blob
    )
    vendor = Vendor.objects.create(name="Bench vendor")
    user = User.objects.create_user(
        username="benchvendor", password=uuid.uuid4().hex, vendor=vendor
    )
    TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
    now = timezone.now()
    Grant.objects.create(
        user=user,
        device=plc,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=4),
        protocols=["ssh"],
    )
    key = asyncssh.generate_private_key("ssh-ed25519")
    parsed = sshkeys.parse(key.export_public_key("openssh").decode())
    SSHPublicKey.objects.create(
        user=user,
        public_key=parsed.openssh,
        algorithm=parsed.algorithm,
        bits=parsed.bits,
        fingerprint=parsed.fingerprint,
    )
    secret = Sensor.new_secret()
    sensor = Sensor(name="bench-sensor", rate_per_minute=max(600, n_max * 4))
    sensor.set_secret(secret)
    sensor.save()
    return {"key": key, "secret": secret, "device": plc, "user": user}


# --- processes -----------------------------------------------------------------------


def spawn(args: list[str], ready: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        args, cwd=ROOT, env=dict(os.environ), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{args[:3]} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc


# --- one size ------------------------------------------------------------------------


class Vendor:
    def __init__(self) -> None:
        self.conn: Any = None
        self.local_port = 0
        self.code = ""
        self.closed_at = 0.0


async def open_vendor(gateway_port: int, key: Any, sem: asyncio.Semaphore) -> Vendor:
    import asyncssh

    v = Vendor()
    async with sem:
        v.conn = await asyncssh.connect(
            "127.0.0.1",
            gateway_port,
            username="benchvendor+bench-plc",
            client_keys=[key],
            known_hosts=None,
            config=None,
            agent_path=None,
            preferred_auth="publickey",
            encryption_algs=["aes128-gcm@openssh.com"],
        )
        await v.conn.create_process("wait", encoding=None)
    return v


async def watch_close(v: Vendor) -> None:
    await v.conn.wait_closed()
    v.closed_at = time.perf_counter()


def post_signal(web_port: int, secret: str, session_code: str) -> tuple[float, float]:
    from sessions.anomalies.intake import signed_headers

    body = json.dumps(
        {"device": "bench-plc", "severity": "high", "kind": "bench", "session": session_code}
    ).encode()
    headers = signed_headers(
        "bench-sensor", secret, body, timestamp=int(time.time()), nonce=uuid.uuid4().hex
    )
    headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=30)
    conn.connect()
    sent = time.perf_counter()
    conn.request("POST", "/api/signals/", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    returned = time.perf_counter()
    conn.close()
    if response.status != 202:
        raise SystemExit(f"signal refused: {response.status}")
    return sent, returned


async def run_size(
    n: int, gateway_port: int, web_port: int, world: dict[str, Any], device: DeviceServer
) -> dict[str, list[float]]:
    from channels.db import database_sync_to_async

    from sessions.models import Session

    sem = asyncio.Semaphore(16)
    vendors: list[Vendor] = []
    # Open one at a time in order so the n-th session row is the n-th vendor.
    for _ in range(n):
        vendors.append(await open_vendor(gateway_port, world["key"], sem))
    codes = await database_sync_to_async(
        lambda: list(
            Session.objects.filter(ended_at=None)
            .order_by("started_at", "id")
            .values_list("code", flat=True)
        )
    )()
    if len(codes) != n:
        raise SystemExit(f"expected {n} live sessions, found {len(codes)}")
    for v, code in zip(vendors, codes):
        v.code = str(code)
    before_ports = set(device.closed_at)
    watchers = [asyncio.create_task(watch_close(v)) for v in vendors]
    loop = asyncio.get_running_loop()
    client_ms: list[float] = []
    device_ms: list[float] = []
    post_ms: list[float] = []
    order = list(range(n))
    random.shuffle(order)
    for i in order:
        v = vendors[i]
        known = set(device.closed_at)
        sent, returned = await loop.run_in_executor(
            None, post_signal, web_port, world["secret"], v.code
        )
        await asyncio.wait_for(watchers[i], 30)
        post_ms.append((returned - sent) * 1000)
        client_ms.append((v.closed_at - returned) * 1000)
        # The device side: the connection that closed after this POST.
        deadline = time.perf_counter() + 30
        while True:
            new = set(device.closed_at) - known - before_ports
            if new:
                port = new.pop()
                device_ms.append((device.closed_at[port] - returned) * 1000)
                break
            if time.perf_counter() > deadline:
                raise SystemExit("the device side did not close")
            await asyncio.sleep(0.001)
    return {
        "client": client_ms,
        "device": device_ms,
        "post": post_ms,
        "client_from_send": [c + p for c, p in zip(client_ms, post_ms)],
        "device_from_send": [d + p for d, p in zip(device_ms, post_ms)],
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def sweep_bench(grants: int, live_rows: int) -> tuple[float, int]:
    """10,000 grants over 500 vendor users and 20 devices (windows spread
    over two days, some revoked), and `live_rows` live sessions on grants
    that cover now; time one sweep.run()."""
    from datetime import timedelta

    from django.utils import timezone

    from broker.models import Device, Grant, TOTPDevice, User, Vendor, Zone
    from sessions.live import sweep
    from sessions.models import Session

    rng = random.Random(7)
    now = timezone.now()
    vendor = Vendor.objects.get(name="Bench vendor")
    zone = Zone.objects.get(slug="bench-zone")
    users = User.objects.bulk_create(
        [User(username=f"sweep{i}", vendor=vendor, password="!") for i in range(500)]
    )
    TOTPDevice.objects.bulk_create(
        [TOTPDevice(user=u, name="bench", confirmed=True) for u in users]
    )
    devices = Device.objects.bulk_create(
        [
            Device(slug=f"sweep-plc-{i}", name=f"PLC {i}", zone=zone, ssh_host=f"10.9.0.{i + 1}")
            for i in range(20)
        ]
    )
    rows = []
    for i in range(grants):
        start = now + timedelta(minutes=rng.randint(-48 * 60, 24 * 60))
        rows.append(
            Grant(
                user=rng.choice(users),
                device=rng.choice(devices),
                protocols=["ssh"],
                starts_at=start,
                ends_at=start + timedelta(hours=rng.randint(1, 8)),
                revoked_at=now if i % 20 == 0 else None,
            )
        )
    Grant.objects.bulk_create(rows, batch_size=1000)
    covering = list(
        Grant.objects.filter(
            user__username__startswith="sweep", revoked_at=None, starts_at__lte=now, ends_at__gt=now
        )[:live_rows]
    )
    Session.objects.bulk_create(
        [
            Session(
                user_id=g.user_id,
                device_id=g.device_id,
                grant=g,
                source_ip="127.0.0.1",
                last_seen_at=now,
                gateway_id="bench",
            )
            for g in covering
        ],
        batch_size=1000,
    )
    started = time.perf_counter()
    sweep.run(timezone.now())
    return (time.perf_counter() - started) * 1000, len(covering)


async def main_async(args: argparse.Namespace, var_dir: str) -> None:
    device = DeviceServer()
    await device.start()
    from channels.db import database_sync_to_async

    world = await database_sync_to_async(make_world)(device, max(args.sizes))
    from sessions.doors.ssh.gateway import host_key_line

    await database_sync_to_async(host_key_line)()  # create the gateway key before it starts
    gateway_port, web_port = free_port(), free_port()
    logs = Path(var_dir)
    gateway = spawn(
        [sys.executable, "manage.py", "rungateway", "--listen", f"127.0.0.1:{gateway_port}"],
        "SSH gateway on",
        logs / "gateway.log",
    )
    web = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "broker.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(web_port),
            "--no-access-log",
            "--log-level",
            "info",
        ],
        "Uvicorn running",
        logs / "web.log",
    )
    results = []
    try:
        for n in args.sizes:
            r = await run_size(n, gateway_port, web_port, world, device)
            results.append((n, r))
            print(f"N={n}", flush=True)
            for label, key in (
                ("POST round trip", "post"),
                ("client EOF after the POST returned", "client"),
                ("device close after the POST returned", "device"),
                ("client EOF after the POST was sent", "client_from_send"),
                ("device close after the POST was sent", "device_from_send"),
            ):
                values = r[key]
                print(
                    f"  {label:40s} p50 {statistics.median(values):7.1f} ms  "
                    f"p99 {pct(values, 99):7.1f} ms  max {max(values):7.1f} ms",
                    flush=True,
                )
    finally:
        for proc in (web, gateway):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        device.server.close()
    ms, rows = await database_sync_to_async(sweep_bench)(args.sweep_grants, max(args.sizes))
    print(
        f"sweep: {args.sweep_grants} grants, {rows} live sessions re-authorized in {ms:.0f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="10,100,500", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="PostgreSQL URL (an empty database); default: a SQLite file",
    )
    parser.add_argument("--sweep-grants", type=int, default=10_000)
    args = parser.parse_args()
    var_dir = tempfile.mkdtemp(prefix="airlock-bench-")
    try:
        setup_django(var_dir, args.database_url, args.redis_url)
        asyncio.run(main_async(args, var_dir))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
