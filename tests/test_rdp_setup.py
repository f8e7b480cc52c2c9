"""Browser RDP on a host: `make run` installs its Debian packages (or says
what to install), the portal says plainly when they are missing, and every
process that can host RDP sessions removes a dead broker's desktops as it
starts (runbroker, and any ASGI server through the lifespan start-up)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from sessions.doors.rdp import desktop as rdp
from tests.conftest import free_port, need
from tests.test_runbroker import broker_env, start  # noqa: F401  (fixtures)

BASE_DIR = Path(settings.BASE_DIR)
SERVICES = BASE_DIR / ".ci" / "services.sh"
RUN_PACKAGES = ["tigervnc-standalone-server", "freerdp2-x11", "ffmpeg"]


def bare_path(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    """A PATH directory with only what the script itself needs: the RDP
    programs are missing there, whatever this host has installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "sort", "id"):
        (bin_dir / name).symlink_to(shutil.which(name))
    for name, body in (extra or {}).items():
        script = bin_dir / name
        script.write_text(body)
        script.chmod(0o755)
    bin_dir.chmod(0o755)
    tmp_path.chmod(0o755)
    return bin_dir


def test_make_run_installs_the_rdp_packages_as_root_after_an_apt_get_update(tmp_path):
    if os.geteuid() != 0:
        need("the root path of `services.sh install-run` needs root")
    calls = tmp_path / "apt-calls"
    bin_dir = bare_path(tmp_path, {"apt-get": f'#!/bin/bash\necho "$*" >> {calls}\n'})
    done = subprocess.run(
        ["bash", str(SERVICES), "install-run"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "update -q"
    assert lines[1].startswith("install -y")
    assert sorted(lines[1].split()[-3:]) == sorted(RUN_PACKAGES)


def test_make_run_as_root_goes_on_without_rdp_when_apt_get_fails(tmp_path):
    if os.geteuid() != 0:
        need("the root path of `services.sh install-run` needs root")
    bin_dir = bare_path(tmp_path, {"apt-get": "#!/bin/bash\nexit 100\n"})
    done = subprocess.run(
        ["bash", str(SERVICES), "install-run"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "browser RDP is unavailable until they are installed" in done.stderr


def test_make_run_not_as_root_prints_one_line_saying_what_to_install():
    # A directory an unprivileged user can reach (pytest's tmp_path is 0700).
    where = Path(tempfile.mkdtemp(prefix="airlock-run-"))
    try:
        bin_dir = bare_path(where, {"apt-get": "#!/bin/bash\nexit 1\n"})
        script = where / "services.sh"
        shutil.copy(SERVICES, script)
        script.chmod(0o755)
        command = ["bash", str(script), "install-run"]
        if os.geteuid() == 0:
            command = [shutil.which("runuser"), "-u", "nobody", "--"] + command
        done = subprocess.run(
            command, env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60, cwd="/"
        )
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "browser RDP is unavailable" in lines[0]
    assert lines[0].endswith("apt-get install " + " ".join(sorted(RUN_PACKAGES)))


def test_make_run_with_the_packages_installed_says_nothing(tmp_path):
    bin_dir = bare_path(
        tmp_path, {name: "#!/bin/bash\n" for name in ("Xvnc", "xfreerdp", "ffmpeg")}
    )
    done = subprocess.run(
        ["bash", str(SERVICES), "install-run"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.django_db
def test_the_rdp_page_says_which_packages_are_missing_instead_of_a_desktop(
    verified_client, make_vendor_user, make_device, make_grant, monkeypatch
):
    user = make_vendor_user()
    device = make_device(ssh_host="", rdp_host="127.0.0.1", rdp_port=free_port())
    grant = make_grant(user, device, protocols=["rdp"])
    client = verified_client(user)
    monkeypatch.setattr(rdp.missing_programs_sentence, "__defaults__", ("/nonexistent",))
    response = client.get(reverse("remote-desktop", args=[grant.code]))
    page = response.content.decode()
    assert response.status_code == 503
    assert 'id="rdp-unavailable"' in page
    assert (
        "Browser RDP is unavailable here until an administrator installs tigervnc-standalone-server, "
        "freerdp2-x11, ffmpeg" in page
    )
    assert 'id="rdp-screen"' not in page


@pytest.mark.django_db
def test_the_rdp_page_shows_the_desktop_when_the_packages_are_there(
    verified_client, make_vendor_user, make_device, make_grant, tmp_path, monkeypatch
):
    bin_dir = bare_path(
        tmp_path, {name: "#!/bin/bash\n" for name in ("Xvnc", "xfreerdp", "ffmpeg")}
    )
    monkeypatch.setattr(rdp.missing_programs_sentence, "__defaults__", (str(bin_dir),))
    user = make_vendor_user()
    device = make_device(ssh_host="", rdp_host="127.0.0.1", rdp_port=free_port())
    grant = make_grant(user, device, protocols=["rdp"])
    page = verified_client(user).get(reverse("remote-desktop", args=[grant.code])).content.decode()
    assert 'id="rdp-screen"' in page and "rdp-unavailable" not in page


# --- orphans removed at start-up ------------------------------------------------------


def orphaned_desktop(run_dir: Path) -> tuple[Path, subprocess.Popen]:
    """A desktop directory as sessions/doors/rdp/desktop.py leaves one: an `owner` file
    naming a broker pid that is dead and the group of a process whose
    command line names the directory (as Xvnc's does)."""
    orphan = run_dir / "0123456789abcdef"
    orphan.mkdir(parents=True)
    leader = subprocess.Popen(["sh", "-c", "sleep 300", str(orphan)], process_group=0)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (orphan / "owner").write_text(f"{dead.pid} {leader.pid}\n")
    return orphan, leader


def test_runbroker_kills_a_dead_brokers_desktop_as_it_starts(start, broker_env, tmp_path):
    run_dir = Path(broker_env["AIRLOCK_VAR_DIR"]) / "rdp"
    orphan, leader = orphaned_desktop(run_dir)
    try:
        port = free_port()
        running = start("--listen", f"127.0.0.1:{port}", "--no-gateway", "--no-jobs")
        running.wait_for(f"http://127.0.0.1:{port}/healthz")
        # Before the first RDP session: at start-up.
        assert leader.wait(30) == -signal.SIGKILL
        assert not orphan.exists()
        assert "removed an orphaned remote desktop" in running.output()
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def test_an_asgi_server_cleans_up_orphans_at_its_lifespan_start_up(settings, tmp_path, monkeypatch):
    from broker.asgi import application

    settings.RDP_RUN_DIR = tmp_path / "rdp"
    monkeypatch.setattr(rdp, "_cleaned_up", False)
    orphan, leader = orphaned_desktop(tmp_path / "rdp")
    sent: list[dict] = []

    async def lifespan() -> None:
        messages = asyncio.Queue()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            messages.put_nowait({"type": kind})

        async def send(message: dict) -> None:
            sent.append(message)

        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, messages.get, send)

    try:
        asyncio.run(lifespan())
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        assert leader.wait(10) == -signal.SIGKILL
        assert not orphan.exists()
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def test_a_live_brokers_desktop_is_left_alone_at_start_up(settings, tmp_path, monkeypatch):
    settings.RDP_RUN_DIR = tmp_path / "rdp"
    monkeypatch.setattr(rdp, "_cleaned_up", False)
    other = tmp_path / "rdp" / "fedcba9876543210"
    other.mkdir(parents=True)
    living = subprocess.Popen(["sleep", "300"])
    try:
        (other / "owner").write_text(f"{living.pid} {living.pid}\n")
        assert rdp.clean_up_at_start() == 0
        assert other.exists() and living.poll() is None
    finally:
        living.kill()
        living.wait()


def test_the_display_number_is_read_in_the_loop_and_the_pipe_is_always_closed():
    async def read(payload: bytes | None, timeout: float = 5) -> tuple[object, int]:
        read_fd, write_fd = os.pipe()
        if payload is not None:
            os.write(write_fd, payload)
        try:
            result: object = await rdp.display_number(read_fd, timeout=timeout)
        except Exception as exc:
            result = type(exc)
        finally:
            os.close(write_fd)
        try:
            os.fstat(read_fd)
            still_open = 1
        except OSError:
            still_open = 0
        return result, still_open

    assert asyncio.run(read(b"17\n")) == ("17", 0)
    assert asyncio.run(read(b"not a number\n")) == (ValueError, 0)
    assert asyncio.run(read(b"9" * 200 + b"\n")) == (ValueError, 0)  # over the limit
    # An Xvnc that never answers: a bounded wait, and no thread left reading.
    assert asyncio.run(read(None, timeout=0.2)) == (asyncio.TimeoutError, 0)
