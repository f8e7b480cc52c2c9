"""Keystroke echo latency: the browser terminal vs native ssh through the
gateway (and direct ssh to the device, for context).

    sudo .venv/bin/python bench/terminal_latency.py [--keys 500]

Set-up (bench/sshbench.py): Debian's sshd as the device, `manage.py
rungateway` as its own process, and for the browser path `uvicorn
broker.asgi:application` as its own process on the same database; both
record and run the detectors as in production. The browser is Debian's
chromium driven by Playwright; the vendor's portal session is created
directly (signed in and OTP-verified).

On the device the session runs `stty raw -echo; exec cat`, so every byte
comes straight back. Browser path: in the page, the time from handing one
key to xterm.js (`term.input`, as a keypress does) until xterm.js has parsed
the echo (`onWriteParsed`): keyboard handler → websocket → consumer → session
core → device and back → xterm's parser. Native path: the time from writing
one byte to OpenSSH's stdin until its echo is read (bench/ssh_latency.py).
A third path sends the same keys over the terminal websocket from a plain
Python client, to separate the server's share from the browser's.
Prints p50/p99 per path in milliseconds. Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import os
import time

from ssh_latency import measure
from sshbench import build, percentile, start_uvicorn

MEASURE_JS = """async ([keys, warmup]) => {
  const term = window.airlockTerminal;
  const samples = [];
  for (let i = 0; i < keys + warmup; i++) {
    const echoed = new Promise((resolve) => {
      const d = term.onWriteParsed(() => { d.dispose(); resolve(); });
    });
    const start = performance.now();
    term.input("x", true);
    await echoed;
    if (i >= warmup) { samples.push(performance.now() - start); }
  }
  return samples;
}"""

SCREEN_JS = """() => {
  const b = window.airlockTerminal.buffer.active;
  const lines = [];
  for (let i = 0; i < b.length; i++) { lines.push(b.getLine(i).translateToString(true)); }
  return lines;
}"""


def browser_samples(port: int, user_code: str, keys: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    from broker.models import Grant, User
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS
    from tests.support.browser_session import session_cookie

    user = User.objects.get(code=user_code)
    grant = Grant.objects.filter(user=user).first()
    cookie = session_cookie(user)
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
        page = context.new_page()
        page.goto(f"{base}/access/grants/{grant.code}/terminal/")
        page.wait_for_selector("#terminal-state.pill-ok", timeout=60000)
        page.evaluate(
            "() => window.airlockTerminal.input('stty raw -echo; echo RE\"\"ADY; exec cat\\r', true)"
        )
        deadline = time.monotonic() + 30
        while "READY" not in page.evaluate(SCREEN_JS):
            if time.monotonic() > deadline:
                raise SystemExit("the browser terminal never reached the device's cat")
            time.sleep(0.05)
        samples = page.evaluate(MEASURE_JS, [keys, 50])
        browser.close()
    return samples


def websocket_samples(port: int, user_code: str, keys: int) -> list[float]:
    """The same echo over the terminal websocket from a plain client (no
    browser): what the server side costs without xterm.js and chromium."""
    import asyncio
    import json as jsonlib

    from websockets.asyncio.client import connect

    from broker.models import Grant, User
    from tests.support.browser_session import session_cookie

    user = User.objects.get(code=user_code)
    grant = Grant.objects.filter(user=user).first()
    cookie = session_cookie(user)
    origin = f"http://127.0.0.1:{port}"

    async def run() -> list[float]:
        url = f"ws://127.0.0.1:{port}/ws/terminal/{grant.code}/?cols=80&rows=24"
        async with connect(
            url,
            origin=origin,
            additional_headers={"Cookie": f"sessionid={cookie}"},
            compression=None,
        ) as ws:
            while True:
                message = await ws.recv()
                if isinstance(message, str) and jsonlib.loads(message).get("state") == "connected":
                    break
            await ws.send(b'stty raw -echo; echo RE""ADY; exec cat\r')
            seen = b""
            # Raw mode: the output has no carriage returns any more.
            while b"READY\n" not in seen.replace(b'RE""ADY', b""):
                message = await ws.recv()
                if isinstance(message, bytes):
                    seen += message
            samples = []
            for i in range(keys + 50):
                start = time.perf_counter()
                await ws.send(b"x")
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes) and b"x" in message:
                        break
                if i >= 50:
                    samples.append((time.perf_counter() - start) * 1000)
            return samples

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500)
    args = parser.parse_args()
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs a loop
    world = build()
    uvicorn_proc = None
    try:
        uvicorn_proc, port = start_uvicorn(world.tmp)
        results: dict[str, list[float]] = {}
        paths = world.paths()
        print("direct ssh...", flush=True)
        results["direct ssh"] = measure(paths["direct"], args.keys)
        print("native ssh through the gateway...", flush=True)
        results["native ssh via airlock"] = measure(paths["airlock"], args.keys)
        print("terminal websocket without a browser...", flush=True)
        results["websocket, no browser"] = websocket_samples(port, world.user_code, args.keys)
        print("browser terminal...", flush=True)
        results["browser terminal"] = browser_samples(port, world.user_code, args.keys)
    finally:
        if uvicorn_proc is not None:
            uvicorn_proc.terminate()
            uvicorn_proc.wait(30)
        world.stop()
    print(f"\nkeystroke echo, {args.keys} keys per path, milliseconds")
    for name, values in results.items():
        print(
            f"  {name:24s} p50 {percentile(values, 50):7.3f}  p99 {percentile(values, 99):7.3f}"
            f"  max {max(values):7.3f}"
        )
    b, n = results["browser terminal"], results["native ssh via airlock"]
    print(
        f"  browser vs native: p50 {percentile(b, 50) / percentile(n, 50):.2f}x "
        f"({percentile(b, 50) - percentile(n, 50):+.3f} ms), "
        f"p99 {percentile(b, 99) / percentile(n, 99):.2f}x "
        f"({percentile(b, 99) - percentile(n, 99):+.3f} ms)"
    )


if __name__ == "__main__":
    main()
