"""`manage.py runbroker`: web portal, SSH gateway and periodic jobs in one
process that starts on the addresses it is given and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery import shared_task
from celery.schedules import crontab
from django.conf import settings
from django.core.management import CommandError

from sessions.management.commands.runbroker import Job, host_port, load_jobs, schedule_seconds
from tests.conftest import free_port

BASE_DIR = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def broker_env(tmp_path_factory) -> dict[str, str]:
    """A migrated embedded broker's environment in its own var/ directory."""
    var_dir = tmp_path_factory.mktemp("runbroker-var")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRLOCK_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env["AIRLOCK_VAR_DIR"] = str(var_dir)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return env


class Running:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log_path = Path(env["AIRLOCK_VAR_DIR"]) / f"runbroker-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runbroker", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def wait_for(self, url: str) -> None:
        deadline = time.monotonic() + 60  # a hang guard, not a speed check
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError(f"runbroker did not answer {url}:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


@pytest.fixture
def start(broker_env):
    started: list[Running] = []

    def run(*args: str) -> Running:
        started.append(Running(broker_env, *args))
        return started[-1]

    yield run
    for running in started:
        running.stop(signal.SIGKILL)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def is_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ssh_banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"SSH-2.0-airlock-test\r\n")
        return s.recv(64)


def test_runbroker_serves_the_portal_static_files_and_the_gateway_then_stops_on_sigterm(start):
    web, ssh = free_port(), free_port()
    broker = start("--listen", f"127.0.0.1:{web}", "--gateway-listen", f"127.0.0.1:{ssh}")
    broker.wait_for(f"http://127.0.0.1:{web}/healthz")

    status, body = get(f"http://127.0.0.1:{web}/healthz")
    assert (status, body) == (200, b'{"ok": true}')
    status, body = get(f"http://127.0.0.1:{web}/login/")
    assert status == 200 and b"<form" in body
    status, body = get(f"http://127.0.0.1:{web}/static/admin/css/base.css")
    assert status == 200 and b"{" in body
    assert ssh_banner(ssh).startswith(b"SSH-2.0-")
    assert "periodic jobs: expire-requests every 60s" in broker.output()

    assert broker.stop(signal.SIGTERM) == 0
    assert "stopped at" in broker.output()
    assert "Traceback" not in broker.output()
    assert not is_listening(web)
    assert not is_listening(ssh)


def test_runbroker_stops_cleanly_on_ctrl_c(start):
    web = free_port()
    broker = start("--listen", f"127.0.0.1:{web}", "--no-gateway")
    broker.wait_for(f"http://127.0.0.1:{web}/healthz")
    assert broker.stop(signal.SIGINT) == 0
    assert "stopping (SIGINT)" in broker.output()
    assert "Traceback" not in broker.output()


def test_no_gateway_leaves_the_ssh_port_closed(start):
    web, ssh = free_port(), free_port()
    broker = start(
        "--listen", f"127.0.0.1:{web}", "--gateway-listen", f"127.0.0.1:{ssh}", "--no-gateway"
    )
    broker.wait_for(f"http://127.0.0.1:{web}/healthz")
    assert not is_listening(ssh)
    assert "SSH gateway" not in broker.output()
    assert broker.stop() == 0


def test_a_busy_port_is_a_clear_error_not_a_traceback(start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = start("--listen", f"127.0.0.1:{port}", "--no-gateway", "--no-jobs")
        assert broker.proc.wait(timeout=60) != 0
    assert f"cannot listen on 127.0.0.1:{port}" in broker.output()
    assert "Traceback" not in broker.output()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:2222", ("::1", 2222)),
        (":8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_listen_addresses_are_parsed(value, expected):
    assert host_port(value) == expected


@pytest.mark.parametrize("value", ["8000", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_malformed_listen_address_is_refused(value):
    with pytest.raises(ValueError):
        host_port(value)


# --- periodic jobs, in-process ----------------------------------------------------------

calls: list[str] = []


@shared_task(name="tests.test_runbroker.record_call")
def record_call(label: str) -> None:
    calls.append(label)


@shared_task(name="tests.test_runbroker.always_fails")
def always_fails() -> None:
    calls.append("failed")
    raise RuntimeError("this job always fails")


def test_every_job_in_the_beat_schedule_resolves_to_a_task():
    jobs = load_jobs(settings.CELERY_BEAT_SCHEDULE)
    assert [job.name for job in jobs] == list(settings.CELERY_BEAT_SCHEDULE)
    for job in jobs:
        assert job.task.name == settings.CELERY_BEAT_SCHEDULE[job.name]["task"]
        assert job.every > 0


def test_an_unknown_task_in_the_schedule_stops_the_start():
    with pytest.raises(CommandError, match="unknown task 'broker.tasks.no_such_task'"):
        load_jobs({"typo": {"task": "broker.tasks.no_such_task", "schedule": 60.0}})


def test_interval_schedules_are_understood_and_crontab_is_refused():
    from datetime import timedelta

    from celery.schedules import schedule

    assert schedule_seconds(30) == 30.0
    assert schedule_seconds(timedelta(minutes=2)) == 120.0
    assert schedule_seconds(schedule(timedelta(seconds=5))) == 5.0
    with pytest.raises(CommandError, match="crontab"):
        schedule_seconds(crontab(minute="*/5"))


def run_until(job: Job, runs: int) -> None:
    async def go() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(job.loop(stopping))
        deadline = time.monotonic() + 30  # hang guard
        while job.runs < runs and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stopping.set()
        await task

    asyncio.run(go())


def test_a_job_runs_at_its_interval_with_its_arguments_until_stopped():
    calls.clear()
    run_until(Job(name="record", task=record_call, every=0.02, args=("tick",)), runs=3)
    assert calls[:3] == ["tick", "tick", "tick"]


def test_a_failing_job_is_logged_and_runs_again(caplog):
    calls.clear()
    job = Job(name="boom", task=always_fails, every=0.02)
    run_until(job, runs=2)
    assert job.failures >= 2
    assert calls.count("failed") >= 2
    assert "periodic job boom failed" in caplog.text
    assert "this job always fails" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_tasks_run_in_a_worker_thread_against_the_database():
    """What runbroker does at each interval, for every real job (run_once
    re-raises a job's failure)."""
    jobs = load_jobs(settings.CELERY_BEAT_SCHEDULE)
    assert sorted(job.name for job in jobs) == sorted(settings.CELERY_BEAT_SCHEDULE)
    for job in jobs:
        asyncio.run(asyncio.to_thread(job.run_once))


# --- the newcomer's path: make run DEMO=1, then their own ssh ----------------------------


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.sshd
def test_a_newcomer_reaches_the_demo_plc_with_their_own_ssh_through_runbroker(
    start, broker_env, tmp_path
):
    """What `make run DEMO=1` does (seed_demo, then runbroker with the demo
    device), on free ports, and the ssh command seed_demo prints."""
    seeded = manage(broker_env, "seed_demo", "--json")
    assert seeded.returncode == 0, seeded.stderr
    demo = json.loads(seeded.stdout)  # nothing but JSON on stdout
    web, gateway, plc = free_port(), free_port(), free_port()
    moved = manage(
        broker_env,
        "shell",
        "-c",
        f"from broker.models import Device; "
        f"Device.objects.filter(slug='demo-plc').update(ssh_port={plc})",
    )
    assert moved.returncode == 0, moved.stderr

    broker = start(
        "--listen",
        f"127.0.0.1:{web}",
        "--gateway-listen",
        f"127.0.0.1:{gateway}",
        "--demo-device",
        f"127.0.0.1:{plc}",
    )
    broker.wait_for(f"http://127.0.0.1:{web}/healthz")
    assert "DEMO simulated PLC" in broker.output()

    known_hosts = tmp_path / "known_hosts"
    ssh = subprocess.run(
        [
            "ssh",
            "-i",
            demo["vendor_ssh_key"],
            "-p",
            str(gateway),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-F",
            "/dev/null",
            "vendor+demo-plc@127.0.0.1",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ssh.returncode == 0, ssh.stderr + broker.output()
    assert "demo-plc (SIMULATED)  state: RUN" in ssh.stdout
    # The gateway the vendor reached is the one seed_demo told them to trust.
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(known_hosts)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert demo["gateway"]["host_key_fingerprint"] in listed
    assert broker.stop() == 0
    assert not is_listening(plc)


def test_runbroker_stops_on_ctrl_c_while_clients_hold_half_open_connections(start, broker_env):
    """Half-open clients on the web port and the demo device (they read the
    banner or send nothing, and stay connected) do not keep the broker alive."""
    seeded = manage(broker_env, "seed_demo", "--json")
    assert seeded.returncode == 0, seeded.stderr
    web, plc = free_port(), free_port()
    broker = start(
        "--listen", f"127.0.0.1:{web}", "--no-gateway", "--demo-device", f"127.0.0.1:{plc}"
    )
    broker.wait_for(f"http://127.0.0.1:{web}/healthz")
    with (
        socket.create_connection(("127.0.0.1", web), timeout=10),
        socket.create_connection(("127.0.0.1", plc), timeout=10) as device,
    ):
        assert device.recv(64).startswith(b"SSH-2.0-")
        broker.proc.send_signal(signal.SIGINT)
        broker.proc.wait(20)
        assert broker.proc.returncode == 0, broker.output()
    assert "Traceback" not in broker.output()
