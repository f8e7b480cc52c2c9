"""`manage.py runbroker`: the embedded, all-in-one broker process.

One asyncio loop holds the three parts a production deployment runs as
separate processes:

- the web portal and websockets: uvicorn serving broker.asgi:application
  (production: `uvicorn broker.asgi:application` replicas behind TLS);
- the SSH gateway: sessions.doors.ssh.gateway.start_server() (production:
  `manage.py rungateway` replicas);
- the periodic jobs of settings.CELERY_BEAT_SCHEDULE, each called in a worker
  thread at its interval (production: `celery -A broker worker -B`).

With the in-memory channel layer this is the only process that can hold and
revoke sessions, which is why it must be one process. SIGINT or SIGTERM stops
the three parts in order: no new web requests or SSH connections, live
sessions ended with a reason, running jobs finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connections

from broker.asgi import application
from broker.celery import app
from sessions.demo import device as demo_device
from sessions.demo import rdp as demo_rdp
from sessions.doors.rdp import desktop
from sessions.doors.ssh import gateway as ssh_gateway

log = logging.getLogger("airlock.runbroker")


def host_port(value: str) -> tuple[str, int]:
    """ "127.0.0.1:8000", "[::1]:8000" or ":8000" (all addresses of 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class Command(BaseCommand):
    help = (
        "Run the embedded broker: web portal, SSH gateway and periodic jobs in one process. "
        "Production runs them as separate processes (see the README)."
    )
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--listen",
            default="127.0.0.1:8000",
            metavar="HOST:PORT",
            help="address of the web portal (default 127.0.0.1:8000)",
        )
        parser.add_argument(
            "--gateway-listen",
            default="127.0.0.1:2222",
            metavar="HOST:PORT",
            help="address of the SSH gateway (default 127.0.0.1:2222)",
        )
        parser.add_argument(
            "--no-gateway", action="store_true", help="do not start the SSH gateway"
        )
        parser.add_argument(
            "--no-jobs",
            action="store_true",
            help="do not run the periodic jobs (when a Celery beat runs them)",
        )
        parser.add_argument(
            "--demo-device",
            metavar="HOST:PORT",
            help="also run the demo's simulated PLC there (after seed_demo), e.g. 127.0.0.1:2201",
        )
        parser.add_argument(
            "--demo-rdp",
            metavar="HOST:PORT",
            help="also run the demo's simulated HMI remote desktop there (after "
            "seed_demo) when its Debian packages are installed, e.g. 127.0.0.1:3390",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Whitenoise hands Django synchronous file iterators, which Django
        # adapts in a thread under ASGI and warns about; that is fine here.
        warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous")
        try:
            web = host_port(options["listen"])
            gateway = None if options["no_gateway"] else host_port(options["gateway_listen"])
            demo_device = host_port(options["demo_device"]) if options["demo_device"] else None
            demo_rdp = host_port(options["demo_rdp"]) if options["demo_rdp"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        broker = Broker(
            web=web,
            gateway=gateway,
            jobs=not options["no_jobs"],
            demo_device=demo_device,
            demo_rdp=demo_rdp,
        )
        try:
            asyncio.run(broker.run())
        except OSError as exc:
            raise CommandError(str(exc)) from None


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Broker.run() owns SIGINT/SIGTERM and stops every part itself.
        yield


@dataclass
class Job:
    """One entry of CELERY_BEAT_SCHEDULE, run in-process."""

    name: str
    task: Any
    every: float
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    runs: int = 0
    failures: int = 0

    def run_once(self) -> None:
        """Run the task in this (worker) thread, as a Celery worker would."""
        close_old_connections()
        try:
            self.task.apply(args=self.args, kwargs=self.kwargs, throw=True)
        finally:
            # Worker threads are reused; never leave a connection open in one.
            connections.close_all()

    async def loop(self, stopping: asyncio.Event) -> None:
        # Like Celery beat: the first run is one interval after start.
        while not await _wait(stopping, self.every):
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                self.failures += 1
                log.exception(
                    "periodic job %s failed; it runs again in %.0f s", self.name, self.every
                )
            finally:
                self.runs += 1


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `event` is set first; True if it was."""
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False


def schedule_seconds(schedule: Any) -> float:
    """Seconds between runs for a number, a timedelta or celery.schedule."""
    if isinstance(schedule, (int, float)):
        seconds = float(schedule)
    elif hasattr(schedule, "total_seconds"):
        seconds = schedule.total_seconds()
    elif hasattr(schedule, "run_every"):
        seconds = schedule.run_every.total_seconds()
    else:
        raise CommandError(
            f"runbroker runs interval schedules only, not {schedule!r}; "
            "run Celery beat for crontab schedules"
        )
    if seconds <= 0:
        raise CommandError(f"a periodic job's interval must be positive, not {seconds}")
    return seconds


def load_jobs(schedule: dict[str, dict]) -> list[Job]:
    """Resolve every CELERY_BEAT_SCHEDULE entry now, so a typo stops the start."""
    app.loader.import_default_modules()
    jobs = []
    for name, entry in schedule.items():
        try:
            task = app.tasks[entry["task"]]
        except KeyError:
            raise CommandError(
                f"periodic job {name!r} names an unknown task {entry.get('task')!r}"
            ) from None
        jobs.append(
            Job(
                name=name,
                task=task,
                every=schedule_seconds(entry["schedule"]),
                args=tuple(entry.get("args", ())),
                kwargs=dict(entry.get("kwargs", {})),
            )
        )
    return jobs


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a busy port is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def start_gateway(host: str, port: int) -> Any:
    """Start the SSH gateway in this loop; it has `await stop(reason)`."""
    return await ssh_gateway.start_server(host, port)


async def start_demo_device(host: str, port: int) -> demo_device.DemoDevice:
    """The simulated PLC; its close()/wait_closed() stop it in bounded time."""
    try:
        return await demo_device.start_demo_device(host, port)
    except ObjectDoesNotExist:
        raise CommandError("no demo device yet: run `manage.py seed_demo` first") from None


async def start_demo_rdp(host: str, port: int) -> Any:
    """The demo HMI, or None (with one log line saying why) when it cannot
    run here: the broker itself runs on without it."""
    try:
        return await asyncio.to_thread(demo_rdp.start_demo_hmi, host, port)
    except ObjectDoesNotExist:
        raise CommandError("no demo HMI yet: run `manage.py seed_demo` first") from None
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log.warning("the demo HMI (remote desktop) is not running: %s", exc)
        return None


@dataclass
class Broker:
    web: tuple[str, int]
    gateway: tuple[str, int] | None
    jobs: bool
    demo_device: tuple[str, int] | None = None
    demo_rdp: tuple[str, int] | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, signame: str = "") -> None:
        if not self.stopping.is_set():
            log.info("stopping (%s)", signame or "requested")
        self.stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig.name)
        jobs = load_jobs(settings.CELERY_BEAT_SCHEDULE) if self.jobs else []
        sock = listening_socket(*self.web)
        # Remote desktops a dead broker left behind go before anything new
        # starts (uvicorn's lifespan, which would do it, is off here).
        await asyncio.to_thread(desktop.clean_up_at_start)
        server = _Uvicorn(
            uvicorn.Config(
                application,
                lifespan="off",
                log_config=None,
                access_log=True,
                # The client address is REMOTE_ADDR; only AIRLOCK_TRUSTED_PROXIES
                # (broker.identity.client_ip) may make Airlock believe
                # X-Forwarded-For, never uvicorn's own default for 127.0.0.1.
                proxy_headers=False,
                server_header=False,
                timeout_graceful_shutdown=10,
                # Websocket frames are small (keystrokes, RFB messages); the
                # consumers close on anything over their own limits, and uvicorn
                # never buffers more than this for one frame.
                ws="websockets-sansio",
                ws_max_size=1024 * 1024,
            )
        )
        gateway = demo = hmi = None
        tasks: list[asyncio.Task] = []
        try:
            if self.demo_device:
                demo = await start_demo_device(*self.demo_device)
            if self.demo_rdp:
                hmi = await start_demo_rdp(*self.demo_rdp)
            if self.gateway:
                gateway = await start_gateway(*self.gateway)
            web_task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
            tasks = [
                asyncio.create_task(job.loop(self.stopping), name=f"job:{job.name}") for job in jobs
            ]
            self._announce(gateway, jobs, hmi)
            stopper = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait({web_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if web_task in done and not self.stopping.is_set():
                web_task.result()  # raise why the web server ended
                raise CommandError("the web server stopped unexpectedly")
            server.should_exit = True
            await web_task
            stopper.cancel()
        finally:
            self.stopping.set()
            if gateway is not None:
                await gateway.stop("the broker is shutting down")
            if demo is not None:
                demo.close()
                await demo.wait_closed()
            if hmi is not None:
                await asyncio.to_thread(hmi.stop)
            # Jobs finish the run they are in (a thread cannot be cancelled).
            await asyncio.gather(*tasks, return_exceptions=True)
            sock.close()
            log.info("stopped at %s", datetime.now(UTC).isoformat(timespec="seconds"))

    def _announce(self, gateway: Any, jobs: list[Job], hmi: Any = None) -> None:
        host, port = self.web
        shown = f"[{host}]" if ":" in host else host
        lines = [f"Airlock is running: portal http://{shown}:{port}/"]
        if gateway is not None:
            ghost, gport = self.gateway
            gport = getattr(gateway, "port", gport)
            lines.append(f"  SSH gateway on {ghost}:{gport} (ssh -p {gport} USER+DEVICE@{ghost})")
        if self.demo_device:
            lines.append(
                "  DEMO simulated PLC on {}:{} (not a real device)".format(*self.demo_device)
            )
        if hmi is not None:
            lines.append(
                "  DEMO simulated HMI remote desktop on {}:{} (not a real device)".format(
                    *self.demo_rdp
                )
            )
        if jobs:
            lines.append(
                "  periodic jobs: " + ", ".join(f"{j.name} every {j.every:g}s" for j in jobs)
            )
        lines.append("  stop with Ctrl-C")
        for line in lines:
            log.info(line)
