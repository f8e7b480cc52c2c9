"""Browser RDP: time to the first remote frame in the browser, key-to-screen
latency against a direct xfreerdp, and the cost of one session.

    .venv/bin/python bench/rdp.py [--keys 200] [--opens 5] [--seconds 10]

Set-up: the device is FreeRDP's shadow server on an Xvfb display (the same
fixture as the tests, tests/support/rdpserver.py: a painted background and an xterm
running `cat`); the portal is `uvicorn broker.asgi:application` as its own
process on a fresh SQLite database; the browser is Debian's chromium via
Playwright with a signed-in, OTP-verified vendor.

- first frame: from the start of navigation to the remote desktop page until
  the canvas shows the device's background colour (performance.now() in the
  page), over --opens page loads;
- key to screen: in the page, one key handed to noVNC (`rfb.sendKey`) until
  the pixels of the device's xterm on the canvas change (polled with
  setTimeout(0), so about 4 ms granularity): noVNC → websocket → consumer →
  RFB parser → Xvnc → xfreerdp → device → back the same way;
- baseline: a direct xfreerdp to the same device on its own Xvfb display,
  key injected with XTest and the screen polled with XGetImage every 0.5 ms;
- cost: PSS and CPU of the session's process group (Xvnc + xfreerdp +
  ffmpeg) and CPU of the broker process, idle and while the device shows a
  clock updating ten times a second.
Prints the figures; not a test.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sshbench import start_uvicorn  # noqa: E402  (bench/ is this script's folder)

FIRST_FRAME_JS = """([r, g, b]) => new Promise((resolve) => {
  function check() {
    const c = document.querySelector("#rdp-screen canvas");
    if (c && c.width > 700) {
      const d = c.getContext("2d").getImageData(700, 500, 1, 1).data;
      if (Math.abs(d[0] - r) < 12 && Math.abs(d[1] - g) < 12 && Math.abs(d[2] - b) < 12) {
        resolve(performance.now()); return;
      }
    }
    setTimeout(check, 0);
  }
  check();
})"""
KEY_LATENCY_JS = """async ([keys, warmup]) => {
  const rfb = window.airlockRfb;
  const canvas = document.querySelector("#rdp-screen canvas");
  const ctx = canvas.getContext("2d");
  const region = () => {
    const d = ctx.getImageData(60, 60, 380, 120).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + d[i + 1] * 7 + d[i + 2] * 13) | 0; }
    return h;
  };
  const samples = [];
  for (let i = 0; i < keys + warmup; i++) {
    const before = region();
    const keysym = (i % 40 === 39) ? 0xff0d : 0x78;
    const start = performance.now();
    rfb.sendKey(keysym, null);
    await new Promise((resolve, reject) => {
      const limit = start + 5000;
      (function poll() {
        if (region() !== before) { resolve(); return; }
        if (performance.now() > limit) { reject(new Error("no change on the screen")); return; }
        setTimeout(poll, 0);
      })();
    });
    if (i >= warmup) { samples.push(performance.now() - start); }
    await new Promise((r) => setTimeout(r, 30));
  }
  return samples;
}"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def setup_world(tmp: Path) -> dict:
    var = tmp / "var"
    var.mkdir()
    os.environ.update(
        {
            "AIRLOCK_VAR_DIR": str(var),
            "AIRLOCK_LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "broker.settings",
            "AIRLOCK_RDP_RUN_DIR": tempfile.mkdtemp(prefix="arl-bench-"),
            "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
            # Each page load below opens a new session (no re-attach).
            "AIRLOCK_RDP_DISCONNECT_GRACE": "0.5",
        }
    )
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from datetime import timedelta

    from django.utils import timezone

    from broker.models import Device, Grant, Site, User, Vendor, Zone
    from tests.support.rdpserver import pin_rdp_device, start_rdp_server

    server = start_rdp_server()
    site = Site.objects.create(slug="bench", name="Bench", timezone="UTC")
    zone = Zone.objects.create(site=site, slug="bench", name="Bench")
    device = Device.objects.create(slug="bench-hmi", name="Bench HMI", zone=zone)
    pin_rdp_device(device, server)
    vendor = Vendor.objects.create(name="Bench vendor")
    user = User.objects.create_user(username="bench", password="bench-pass-1", vendor=vendor)
    device.eligible_vendors.add(vendor)
    from tests.conftest import _enrol

    _enrol(user)
    now = timezone.now()
    grant = Grant.objects.create(
        user=user,
        device=device,
        protocols=["rdp"],
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=4),
    )
    return {"server": server, "user": user, "grant": grant}


# --- process accounting from /proc ----------------------------------------------


def desktop_group() -> list[int]:
    """The pids of the (one) live session's process group."""
    run_dir = os.environ["AIRLOCK_RDP_RUN_DIR"]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"Xvnc\0") and run_dir.encode() in cmd:
            pgid = int(pid)
            return [
                int(p) for p in filter(str.isdigit, os.listdir("/proc")) if _pgid(int(p)) == pgid
            ]
    return []


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_share(pids: list[int], seconds: float) -> float:
    before, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / (time.monotonic() - t0)


# --- the direct baseline: xfreerdp on its own Xvfb, XTest in, XGetImage out --------


class X:
    def __init__(self, display: str) -> None:
        self.x = ctypes.CDLL(ctypes.util.find_library("X11"))
        self.xtst = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        self.x.XOpenDisplay.restype = ctypes.c_void_p
        self.x.XDefaultRootWindow.restype = ctypes.c_ulong
        self.x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self.x.XGetImage.restype = ctypes.c_void_p
        self.x.XGetImage.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulong,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_ulong,
            ctypes.c_int,
        ]
        self.x.XDestroyImage = getattr(self.x, "XDestroyImage", None)
        self.x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x.XFlush.argtypes = [ctypes.c_void_p]
        self.x.XFree.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeKeyEvent.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_ulong,
        ]
        self.dpy = self.x.XOpenDisplay(display.encode())
        if not self.dpy:
            raise SystemExit(f"cannot open display {display}")
        self.root = self.x.XDefaultRootWindow(self.dpy)

    def region(self) -> bytes:
        image = self.x.XGetImage(self.dpy, self.root, 60, 60, 380, 120, 0xFFFFFFFF, 2)
        # XImage: int width, height, xoffset, format; char *data; ... 380*120*4 bytes.
        data_ptr = ctypes.cast(image + 16, ctypes.POINTER(ctypes.c_void_p)).contents.value
        data = ctypes.string_at(data_ptr, 380 * 120 * 4)
        # XDestroyImage is a macro in Xlib; free the data and the struct instead.
        self.x.XFree(data_ptr)
        self.x.XFree(image)
        return data

    def key(self, keysym: int) -> None:
        code = self.x.XKeysymToKeycode(self.dpy, keysym)
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 1, 0)
        self.xtst.XTestFakeKeyEvent(self.dpy, code, 0, 0)
        self.x.XFlush(self.dpy)


def direct_samples(server, keys: int) -> list[float]:
    from tests.support.rdpserver import DEVICE_PASSWORD, DEVICE_USER

    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        display = ":" + fh.readline().strip()
    home = tempfile.mkdtemp(prefix="arl-direct-")
    client = subprocess.Popen(
        [
            "xfreerdp",
            f"/v:127.0.0.1:{server.port}",
            f"/u:{DEVICE_USER}",
            "/d:",
            "/from-stdin:force",
            "/sec:nla",
            f"/cert:deny,fingerprint:sha256:{server.fingerprint}",
            "/f",
            "-clipboard",
            # The same options as the broker's xfreerdp (sessions/doors/rdp/desktop.py).
            "/bpp:24",
            "-decorations",
            "-grab-keyboard",
            "-drives",
            "-home-drive",
            "/audio-mode:2",
            "-wallpaper",
            "-themes",
            "/auto-reconnect-max-retries:0",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": home, "DISPLAY": display},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client.stdin.write(DEVICE_PASSWORD.encode() + b"\n")
    client.stdin.close()
    try:
        x = X(display)
        time.sleep(4)
        samples = []
        for i in range(keys + 20):
            before = x.region()
            start = time.perf_counter()
            x.key(0xFF0D if i % 40 == 39 else 0x78)
            while x.region() == before:
                if time.perf_counter() - start > 5:
                    raise SystemExit("direct xfreerdp: no change on the screen")
                time.sleep(0.0005)
            if i >= 20:
                samples.append((time.perf_counter() - start) * 1000)
            time.sleep(0.03)
        return samples
    finally:
        client.terminate()
        client.wait(10)
        xvfb.terminate()
        xvfb.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-rdp-"))
    world = setup_world(tmp)
    server = world["server"]
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.support.browser_session import session_cookie
    from tests.support.rdpserver import BACKGROUND

    uvicorn_proc, port = start_uvicorn(tmp)
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/access/grants/{world['grant'].code}/desktop/"
    clock = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            context.add_cookies(
                [{"name": "sessionid", "value": session_cookie(world["user"]), "url": base}]
            )
            first_frames = []
            for _ in range(args.opens):
                page = context.new_page()
                page.goto(url)
                first_frames.append(page.evaluate(FIRST_FRAME_JS, list(BACKGROUND)))
                page.close()
                time.sleep(2)  # the session ends after the disconnect grace
            page = context.new_page()
            page.goto(url)
            page.evaluate(FIRST_FRAME_JS, list(BACKGROUND))
            time.sleep(2)
            browser_keys = page.evaluate(KEY_LATENCY_JS, [args.keys, 20])
            group = desktop_group()
            broker = [uvicorn_proc.pid]
            names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in group}
            before_each = {pid: cpu_seconds([pid]) for pid in group}
            idle_cpu, idle_broker = cpu_share(group, args.seconds), None
            cpu_each = ", ".join(
                f"{names[pid]} {(cpu_seconds([pid]) - before_each[pid]) / args.seconds * 100:.1f}"
                for pid in group
            )
            idle_pss = pss_kib(group)
            breakdown = ", ".join(f"{names[pid]} {pss_kib([pid]) / 1024:.1f}" for pid in group)
            clock = subprocess.Popen(
                [
                    "xterm",
                    "-geometry",
                    "30x2+600+300",
                    "-e",
                    "sh",
                    "-c",
                    "while :; do date +%T.%N; sleep 0.1; done",
                ],
                env={"PATH": "/usr/bin:/bin", "DISPLAY": server.display, "HOME": str(server.dir)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2)
            before_broker = cpu_seconds(broker)
            busy_cpu = cpu_share(group, args.seconds)
            busy_broker = (cpu_seconds(broker) - before_broker) / args.seconds
            busy_pss = pss_kib(group)
            page.close()
            browser.close()
        clock.terminate()
        time.sleep(2)
        print("direct xfreerdp baseline...", flush=True)
        direct = direct_samples(server, args.keys)
    finally:
        if clock is not None and clock.poll() is None:
            clock.terminate()
        uvicorn_proc.terminate()
        uvicorn_proc.wait(30)
        server.stop()
        shutil.rmtree(os.environ["AIRLOCK_RDP_RUN_DIR"], ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    del idle_broker
    print(
        f"\nfirst remote frame after navigation start, {args.opens} page loads: "
        f"median {statistics.median(first_frames):.0f} ms, max {max(first_frames):.0f} ms"
    )
    print(f"key to screen, {args.keys} keys, milliseconds")
    for name, values in (("browser via airlock", browser_keys), ("direct xfreerdp", direct)):
        print(
            f"  {name:22s} p50 {percentile(values, 50):7.1f}  p99 {percentile(values, 99):7.1f}"
            f"  max {max(values):7.1f}"
        )
    print(
        f"  added by airlock + browser: p50 {percentile(browser_keys, 50) - percentile(direct, 50):+.1f} ms"
    )
    print(f"session process group (Xvnc + xfreerdp + ffmpeg), {len(group)} processes:")
    print(
        f"  idle:            CPU {idle_cpu * 100:5.1f} % of a core ({cpu_each} %),"
        f" PSS {idle_pss / 1024:6.1f} MiB ({breakdown} MiB)"
    )
    print(
        f"  changing screen: CPU {busy_cpu * 100:5.1f} % of a core, PSS {busy_pss / 1024:6.1f} MiB;"
        f" broker process (relay) {busy_broker * 100:5.1f} %"
    )
    per_session = busy_cpu + busy_broker
    mem_avail = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
    )
    print(
        f"  sessions per 2-core machine at 80 % CPU with changing screens: "
        f"~{int(1.6 / per_session) if per_session else 0}; "
        f"idle sessions by memory ({mem_avail // 1024} MiB available): ~{mem_avail // max(1, idle_pss)}"
    )


if __name__ == "__main__":
    main()
