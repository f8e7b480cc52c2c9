"""The demo's simulated HMI remote desktop: seed_demo creates demo-hmi (its
certificate pinned, its credential vaulted, an approved rdp grant for the
demo vendor), `runbroker --demo-rdp` (what `make run DEMO=1` passes) runs
it, and the demo vendor reaches it through the product's browser RDP path."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from broker.access import authorize
from broker.models import Credential, Device, Grant, User
from sessions.demo import rdp as demordp
from sessions.doors.rdp import consumer as rdp_consumer
from sessions.doors.rdp.desktop import fetch_certificate_fingerprint
from sessions.models import Session
from tests.conftest import free_port
from tests.support.accounts import seed_json
from tests.support.browser_session import session_cookie
from tests.support.rdpserver import need_programs
from tests.test_rdp_consumer import Browser, communicator, run
from tests.test_runbroker import BASE_DIR, broker_env, start  # noqa: F401  (fixtures)


@pytest.fixture
def demo_var(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.mark.django_db
def test_seed_demo_creates_the_demo_hmi_with_a_pinned_certificate_and_an_rdp_grant(demo_var):
    data = seed_json()
    hmi = data["hmi"]
    device = Device.objects.get(slug="demo-hmi")
    vendor = User.objects.get(username="vendor")
    assert hmi["slug"] == "demo-hmi" and hmi["kind"] == "HMI" and device.kind == Device.Kind.HMI
    assert (device.rdp_host, device.rdp_port, device.rdp_security) == ("127.0.0.1", 3390, "nla")
    assert hmi["rdp"] == "127.0.0.1:3390"
    assert device.zone == Device.objects.get(slug="demo-plc").zone
    # Pinned at seed time: the certificate the demo desktop will present.
    assert (
        device.rdp_certificate_sha256
        == hmi["certificate_sha256"]
        == demordp.write_certificate(demo_var / "demo" / "hmi")
    )
    credential = Credential.objects.get(device=device, protocol="rdp")
    username, password = demordp.demo_hmi_login()
    assert credential.username == username == "operator" and len(password) >= 20
    assert password not in json.dumps(data)
    assert device in vendor.vendor.eligible_devices.all()
    grant = Grant.objects.get(code=hmi["grant"]["code"])
    assert grant.device == device and "rdp" in grant.protocols
    assert (
        authorize(vendor, device, protocol="rdp", at=timezone.now(), source_ip="127.0.0.1").grant
        == grant
    )
    assert hmi["url"].endswith(f"/access/grants/{grant.code}/desktop/")
    # The SSH part still lists its grant on demo-plc.
    assert Grant.objects.get(code=data["grant"]["code"]).device.slug == "demo-plc"
    again = seed_json()["hmi"]
    assert (
        again["grant"] == hmi["grant"] and again["certificate_sha256"] == hmi["certificate_sha256"]
    )
    assert demordp.demo_hmi_login() == (username, password)
    assert Device.objects.filter(slug="demo-hmi").count() == 1


@pytest.mark.django_db
def test_the_printed_demo_says_how_to_open_the_demo_desktop(demo_var):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "Demo HMI: demo-hmi (HMI, simulated remote desktop) at 127.0.0.1:3390" in text
    assert "/desktop/" in text


@pytest.mark.rdp
@pytest.mark.django_db(transaction=True)
def test_the_demo_vendor_opens_the_demo_hmi_through_browser_rdp(demo_var, settings):
    need_programs()
    run_dir = Path(tempfile.mkdtemp(prefix="arl-rdp-"))
    settings.RDP_RUN_DIR = run_dir
    settings.RDP_DISCONNECT_GRACE = 0.5
    data = seed_json()
    port = free_port()  # never assume the demo's own port is free here
    Device.objects.filter(slug="demo-hmi").update(rdp_port=port)
    device = demordp.start_demo_hmi("127.0.0.1", port)
    vendor = User.objects.get(username="vendor")
    grant = Grant.objects.get(code=data["hmi"]["grant"]["code"])
    cookie = session_cookie(vendor)
    panel_log = demordp.panel_log_path()
    seen: dict = {}

    async def scenario() -> None:
        comm = communicator(grant, cookie)
        connected, _ = await comm.connect(timeout=30)
        assert connected
        browser = Browser(comm)
        seen["size"] = await browser.handshake()
        live = next(iter(rdp_consumer.RDP_SESSIONS.values()))
        await browser.click(200, 150)
        await asyncio.sleep(0.5)
        await browser.type("status\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not panel_log.exists() or "operator typed: status" not in panel_log.read_text()
        ):
            await asyncio.sleep(0.2)
        await comm.disconnect()
        await asyncio.wait_for(live.wait_closed(), 30)

    try:
        run(scenario())
    finally:
        device.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    assert seen["size"] == (800, 600)
    assert "operator typed: status" in panel_log.read_text()
    session = Session.objects.get(user=vendor)
    assert session.device.slug == "demo-hmi" and session.protocol == "rdp"
    assert session.ended_at is not None and session.recording_sha256
    # Stopped: nothing listens on the port, and the SAM file is gone.
    assert not (demo_var / "demo" / "hmi" / "sam").exists()
    with pytest.raises(OSError):
        fetch_certificate_fingerprint("127.0.0.1", port, timeout=2)


@pytest.mark.rdp
def test_runbroker_runs_the_demo_hmi_with_the_certificate_seed_demo_pinned(start, broker_env):
    need_programs()
    seeded = subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--json"],
        cwd=BASE_DIR,
        env=broker_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr
    pinned = json.loads(seeded.stdout)["hmi"]["certificate_sha256"]
    web, rdp_port = free_port(), free_port()
    running = start(
        "--listen",
        f"127.0.0.1:{web}",
        "--no-gateway",
        "--no-jobs",
        "--demo-rdp",
        f"127.0.0.1:{rdp_port}",
    )
    running.wait_for(f"http://127.0.0.1:{web}/healthz")
    assert fetch_certificate_fingerprint("127.0.0.1", rdp_port) == pinned
    assert "DEMO simulated HMI remote desktop on 127.0.0.1:" in running.output()
    assert running.stop(signal.SIGTERM) == 0
    with pytest.raises(OSError):
        fetch_certificate_fingerprint("127.0.0.1", rdp_port, timeout=2)
