"""Keystroke round trip through Airlock vs direct ssh vs OpenSSH ProxyJump.

    sudo .venv/bin/python bench/ssh_latency.py [--keys 1000]

For each path one interactive session (remote pty in raw mode running
`cat`, so each byte comes straight back) receives single bytes one at a
time; the time from writing a byte to reading its echo is one round trip.
Prints p50/p99 per path and Airlock's added latency over ProxyJump
(targets: p50 <= 0.3 ms, p99 <= 1 ms). Same cipher on every leg; Airlock
records and runs its detectors as in production. Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import time

from sshbench import build, percentile


def read_exact(fd: int, n: int, timeout: float = 30) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise SystemExit("no echo: the session is not answering")
        chunk = os.read(fd, n - len(got))
        if not chunk:
            raise SystemExit(f"the session closed after {got!r}")
        got += chunk
    return got


def measure(cmd: list[str], keys: int) -> list[float]:
    proc = subprocess.Popen(
        [*cmd[:1], "-tt", *cmd[1:], "stty raw -echo; echo READY; exec cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    out = proc.stdout.fileno()
    buf = b""
    while not (b"READY" in buf and buf.endswith(b"\n")):
        buf += read_exact(out, 1)
    samples = []
    try:
        for i in range(keys + 50):
            start = time.perf_counter()
            os.write(proc.stdin.fileno(), b"x")
            read_exact(out, 1)
            if i >= 50:  # warm-up keystrokes are not counted
                samples.append((time.perf_counter() - start) * 1000)
    finally:
        # EOF first, so the device's sshd ends the session rather than
        # keeping `cat` on a pty after the client is gone.
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    world = build()
    try:
        results = {}
        for name, cmd in world.paths().items():
            print(f"{name}...", flush=True)
            results[name] = measure(cmd, args.keys)
    finally:
        world.stop()
    print(f"\nkeystroke round trip, {args.keys} single bytes per path, milliseconds")
    for name, values in results.items():
        print(
            f"  {name:9s} p50 {percentile(values, 50):6.3f}  p99 {percentile(values, 99):6.3f}  "
            f"max {max(values):6.3f}"
        )
    a, p = results["airlock"], results["proxyjump"]
    print(
        f"  airlock added over proxyjump: p50 {percentile(a, 50) - percentile(p, 50):+.3f} ms "
        f"(target <= 0.3), p99 {percentile(a, 99) - percentile(p, 99):+.3f} ms (target <= 1)"
    )


if __name__ == "__main__":
    main()
