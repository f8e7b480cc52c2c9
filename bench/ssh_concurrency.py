"""Many concurrent interactive sessions through one gateway process.

    sudo .venv/bin/python bench/ssh_concurrency.py [--sizes 100,1000] [--seconds 10]

For each size N: N vendors (asyncssh clients in this process, so the
machine is not spent on N OpenSSH processes) open interactive sessions (pty,
`cat` in raw mode on the real sshd device) through one `rungateway` process.
Measured on the gateway process:
- RSS per idle session: (RSS with N idle sessions - RSS before) / N
  (target <= 256 KiB);
- CPU seconds spent opening the N sessions, and per second while they type;
- keystroke round trip under load: every session types one byte a second
  for `--seconds`, p50/p99/max over all keystrokes.
Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time

from sshbench import CIPHER, build, cpu_seconds, percentile, rss_kib


class Typist:
    def __init__(self) -> None:
        self.waiters: list[tuple[float, asyncio.Future]] = []
        self.samples: list[float] = []

    def echoed(self, data: bytes) -> None:
        for _ in data:
            if self.waiters:
                start, fut = self.waiters.pop(0)
                self.samples.append((time.perf_counter() - start) * 1000)
                if not fut.done():
                    fut.set_result(None)


async def open_session(world, key, sem: asyncio.Semaphore, typist: Typist):
    import asyncssh

    class Session(asyncssh.SSHClientSession):
        def __init__(self) -> None:
            self.ready = asyncio.get_running_loop().create_future()
            self.buf = b""

        def data_received(self, data: bytes, datatype) -> None:
            if not self.ready.done():
                self.buf += data
                if b"READY" in self.buf and self.buf.endswith(b"\n"):
                    self.ready.set_result(None)
                return
            typist.echoed(data)

    async with sem:
        conn = await asyncssh.connect(
            "127.0.0.1",
            world.gateway_port,
            username=world.login,
            client_keys=[key],
            known_hosts=str(world.known_hosts),
            config=None,
            agent_path=None,
            encryption_algs=[CIPHER],
            compression_algs=None,
        )
        chan, session = await conn.create_session(
            Session,
            "stty raw -echo; echo READY; exec cat",
            term_type="xterm",
            term_size=(80, 24),
            encoding=None,
        )
        await asyncio.wait_for(session.ready, 60)
    return conn, chan


async def run_size(world, n: int, seconds: int, profile: str | None = None) -> dict:
    import asyncssh

    key = asyncssh.read_private_key(str(world.key))
    pid = world.gateway_pid()
    typist = Typist()
    await asyncio.sleep(1)
    rss0, cpu0 = rss_kib(pid), cpu_seconds(pid)
    sem = asyncio.Semaphore(16)
    t0 = time.perf_counter()
    opened = await asyncio.gather(*(open_session(world, key, sem, typist) for _ in range(n)))
    open_s = time.perf_counter() - t0
    cpu_open = cpu_seconds(pid) - cpu0
    await asyncio.sleep(5)  # idle
    rss_idle = rss_kib(pid)

    # One waiter list per channel keeps echo matching simple.
    cpu1 = cpu_seconds(pid)
    t1 = time.perf_counter()

    async def per_chan(conn_chan) -> list[float]:
        conn, chan = conn_chan
        own = Typist()
        session = chan._session  # the Session created above
        session.data_received = lambda data, datatype: own.echoed(data)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.random())
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fut = loop.create_future()
            own.waiters.append((time.perf_counter(), fut))
            chan.write(b"x")
            try:
                await asyncio.wait_for(fut, 30)
            except TimeoutError:
                pass
            await asyncio.sleep(1.0)
        return own.samples

    spy = None
    if profile:
        import subprocess

        spy = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(pid),
                "-o",
                f"{profile}.{n}",
                "--format",
                "raw",
                "-r",
                "200",
                "-d",
                str(seconds),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    results = await asyncio.gather(*(per_chan(oc) for oc in opened))
    if spy is not None:
        spy.wait(60)
    typing_s = time.perf_counter() - t1
    cpu_typing = cpu_seconds(pid) - cpu1
    samples = [s for r in results for s in r]
    for conn, _chan in opened:
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for conn, _ in opened), return_exceptions=True)
    return {
        "n": n,
        "open_s": open_s,
        "cpu_open": cpu_open,
        "rss_per_session_kib": (rss_idle - rss0) / n,
        "rss_idle_mib": rss_idle / 1024,
        "cpu_per_s_typing": cpu_typing / typing_s,
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples) if samples else float("nan"),
        "keys": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="py-spy the gateway while the sessions type (collapsed stacks)",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    world = build()
    try:
        rows = []
        for n in [int(x) for x in args.sizes.split(",")]:
            row = asyncio.run(run_size(world, n, args.seconds, args.profile))
            rows.append(row)
            print(row, flush=True)
            time.sleep(3)
    finally:
        world.stop()
    print("\nconcurrent interactive sessions through one gateway process")
    print(
        "     N  open(s)  CPU open(s)  RSS/idle session  gateway RSS  CPU while typing  keystroke p50/p99/max (ms)"
    )
    for r in rows:
        print(
            f"{r['n']:6d} {r['open_s']:8.1f} {r['cpu_open']:12.1f} {r['rss_per_session_kib']:13.0f} KiB "
            f"{r['rss_idle_mib']:8.0f} MiB {100 * r['cpu_per_s_typing']:14.0f} %   "
            f"{r['p50']:.2f} / {r['p99']:.2f} / {r['max']:.2f}  ({r['keys']} keys)"
        )
    print("target: <= 256 KiB RSS per idle session at 1,000 sessions")


if __name__ == "__main__":
    main()
