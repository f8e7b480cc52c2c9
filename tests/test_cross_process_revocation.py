"""Revocation across processes, the production shape: the SSH gateway is a
separate `manage.py rungateway` process, this test process is the web app,
and the two share only the database and Redis (channels-redis pub/sub).

A real OpenSSH client holds a session through the gateway to a real sshd;
a signed Zeek notice for the device's address is posted to the web app; the
ssh client exits with the reason on stderr and the device-side TCP
connection is closed.

The database both processes open is the test database: a SQLite file
(broker/settings.py puts the test database in a file for exactly this) or,
under the PostgreSQL pass, the PostgreSQL test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from broker.models import Lock, SSHPublicKey
from sessions.models import Session
from tests.conftest import free_port, redis_url
from tests.support.netstate import established_to
from tests.support.signing import create_sensor, post_signal
from tests.support.sshd import device_sshd, keygen, pin_device, wait_for  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


class GatewayProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = Path(django_settings.VAR_DIR) / f"gateway-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "rungateway", "--listen", f"127.0.0.1:{self.port}"],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "SSH gateway on" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rungateway did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_layer(settings: Any) -> str:
    url = redis_url()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [url]},
        }
    }
    return url


@pytest.fixture
def gateway_process(redis_layer: str, transactional_db: Any) -> Iterator[GatewayProcess]:
    from sessions.doors.ssh.gateway import host_key_line

    host_key_line()  # create the gateway's host key once, before the other process reads it
    env = dict(
        os.environ,
        REDIS_URL=redis_layer,
        DATABASE_URL=database_url(),
        AIRLOCK_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="broker.settings",
    )
    gateway = GatewayProcess(env)
    yield gateway
    gateway.stop()


def test_a_signed_zeek_notice_ends_a_session_held_by_another_process(
    gateway_process: GatewayProcess,
    device_sshd: Any,
    client: Any,
    tmp_path: Path,
    make_vendor_user: Any,
    make_device: Any,
    make_grant: Any,
) -> None:
    from broker import sshkeys
    from sessions.doors.ssh.gateway import host_key_line

    alice = make_vendor_user("alice")
    device = make_device("plc-7")
    pin_device(device, device_sshd)  # the device is 127.0.0.1:<sshd port>
    make_grant(alice, device)
    key, pub = keygen(tmp_path / "alice_ed25519")
    parsed = sshkeys.parse(pub)
    SSHPublicKey.objects.create(
        user=alice,
        public_key=parsed.openssh,
        algorithm=parsed.algorithm,
        bits=parsed.bits,
        fingerprint=parsed.fingerprint,
    )
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{gateway_process.port} {host_key_line()}\n")
    _, secret = create_sensor("zeek-ot-1")

    before = established_to(device_sshd.port)
    ssh = subprocess.Popen(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(gateway_process.port),
            "alice+plc-7@127.0.0.1",
            "sleep 600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(
        lambda: (
            Session.objects.filter(user=alice, ended_at=None).exists()
            and established_to(device_sshd.port) > before
        ),
        timeout=60,
    )
    session = Session.objects.get(user=alice)
    assert session.gateway_id  # held by the other process

    notice = {
        "ts": time.time(),
        "uid": "CHhAvVGS1DHFjwGM9",
        "id.orig_h": "10.20.0.15",
        "id.orig_p": 51234,
        "id.resp_h": "127.0.0.1",
        "id.resp_p": device_sshd.port,
        "proto": "tcp",
        "note": "Modbus::Unauthorized_Write",
        "msg": "Modbus write to holding registers from a host outside the engineering VLAN",
        "src": "10.20.0.15",
        "dst": "127.0.0.1",
        "p": device_sshd.port,
        "peer_descr": "zeek-ot-1",
        "actions": ["Notice::ACTION_LOG"],
        "email_dest": [],
        "suppress_for": 3600.0,
    }
    response = post_signal(client, "zeek-ot-1", secret, json.dumps(notice) + "\n")
    assert response.status_code == 202, response.content

    try:
        _, err = ssh.communicate(timeout=60)  # a generous hang guard; speed is bench/'s
    except subprocess.TimeoutExpired:
        ssh.kill()
        raise AssertionError(
            f"the ssh client did not exit; gateway log:\n{gateway_process.output()}"
        )
    text = err.decode(errors="replace")
    assert ssh.returncode != 0
    assert "Modbus::Unauthorized_Write" in text and "sensor:zeek-ot-1" in text
    wait_for(lambda: established_to(device_sshd.port) == before, timeout=30)
    wait_for(lambda: Session.objects.get(pk=session.pk).ended_at is not None, timeout=30)
    assert Lock.objects.filter(user=alice).exists()  # high: the user is locked for an hour
