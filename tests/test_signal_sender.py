"""The documented senders: `manage.py sendsignal` and the contrib
forwarder for Zeek and Suricata logs, posting to a real running portal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from sessions.models import Signal
from tests.conftest import need
from tests.support.signing import DATA, create_sensor

FORWARDER = Path(settings.BASE_DIR) / "contrib" / "airlock-signal-forward.py"


@pytest.fixture
def portal(live_server: Any, make_device: Any, monkeypatch: Any, settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    make_device("plc-7", ssh_host="10.40.1.7")
    _, secret = create_sensor("zeek-ot-1")
    monkeypatch.setenv("AIRLOCK_SENSOR_SECRET", secret)
    return live_server


def test_sendsignal_posts_a_signed_generic_signal(portal: Any, capsys: Any) -> None:
    call_command(
        "sendsignal",
        url=portal.url,
        sensor="zeek-ot-1",
        device="plc-7",
        severity="medium",
        kind="manual-test",
        detail="from the command",
    )
    assert "202" in capsys.readouterr().out
    signal = Signal.objects.get()
    assert (signal.kind, signal.severity, signal.device.slug) == ("manual-test", "medium", "plc-7")


def test_sendsignal_posts_a_zeek_log_as_it_is(portal: Any) -> None:
    call_command(
        "sendsignal", url=portal.url, sensor="zeek-ot-1", body=str(DATA / "zeek_notice.log")
    )
    assert Signal.objects.filter(format="zeek").count() == 3


def test_sendsignal_reports_a_refusal(portal: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("AIRLOCK_SENSOR_SECRET", "wrong")
    with pytest.raises(CommandError, match="401"):
        call_command("sendsignal", url=portal.url, sensor="zeek-ot-1", device="plc-7")
    assert not Signal.objects.exists()


def test_sendsignal_needs_a_secret(portal: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("AIRLOCK_SENSOR_SECRET")
    with pytest.raises(CommandError, match="no secret"):
        call_command("sendsignal", url=portal.url, sensor="zeek-ot-1", device="plc-7")


@pytest.mark.parametrize("log, expected", [("zeek_notice.log", 3), ("suricata_eve.json", 2)])
def test_the_contrib_forwarder_sends_a_log_file(
    portal: Any, tmp_path: Path, log: str, expected: int
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(os.environ["AIRLOCK_SENSOR_SECRET"] + "\n")
    result = subprocess.run(
        [
            sys.executable,
            str(FORWARDER),
            "--url",
            portal.url,
            "--sensor",
            "zeek-ot-1",
            "--secret-file",
            str(secret_file),
            "--follow",
            str(DATA / log),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    assert result.returncode == 0, result.stderr
    assert Signal.objects.count() == expected


def test_seed_demo_creates_a_demo_sensor_whose_secret_signs(db: Any, capsys: Any) -> None:
    import json

    from sessions.models import Sensor

    call_command("seed_demo", json=True)
    first = json.loads(capsys.readouterr().out)["sensor"]
    call_command("seed_demo", json=True)
    again = json.loads(capsys.readouterr().out)["sensor"]
    assert first == again and first["name"] == "demo-sensor"
    assert Sensor.objects.get(name="demo-sensor").secret() == first["secret"]
    demo_sensor = Sensor.objects.get(name="demo-sensor")
    assert (
        demo_sensor.zones.filter(devices__slug="demo-plc").count() == demo_sensor.zones.count() == 1
    )


def test_the_readme_curl_and_openssl_example_is_accepted(portal: Any) -> None:
    import re
    import shutil

    if not (shutil.which("curl") and shutil.which("openssl")):
        need("needs curl and openssl (Debian packages curl, openssl)")
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    script = next(
        block for block in re.findall(r"```sh\n(.*?)```", readme, re.S) if "openssl dgst" in block
    )
    script = (
        script.replace("https://airlock.plant.example", portal.url)
        .replace("X-Airlock-Sensor: ot-monitor", "X-Airlock-Sensor: zeek-ot-1")
        .replace("SECRET=...", 'SECRET="$AIRLOCK_SENSOR_SECRET"')
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert '"accepted": 1' in result.stdout, result.stdout + result.stderr
    assert Signal.objects.get().kind == "program-download"
