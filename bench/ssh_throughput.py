"""Bulk output through Airlock vs direct ssh vs OpenSSH ProxyJump.

    sudo .venv/bin/python bench/ssh_throughput.py [--mib 1024] [--runs 3]

The device (a real sshd) `cat`s a file of text (base64: what a terminal
shows, so the recording holds it one-to-one) to the OpenSSH client, whose
output is counted by `wc -c`. Same cipher (aes128-gcm) on every leg.
Airlock records the session (asciicast v2) and runs whatever observers the
gateway attaches, as in production. Prints MB/s per path (median of the
runs, paths interleaved) and the ratios. Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import statistics
import subprocess
import time

from sshbench import build


def make_file(path: str, size: int) -> None:
    block = base64.b64encode(os.urandom(3 * 1024 * 1024 // 4 * 3))[: 3 * 1024 * 1024]
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            chunk = block[:left]
            fh.write(chunk)
            left -= len(chunk)
    os.chmod(path, 0o644)


def run(cmd: list[str], path: str, size: int) -> float:
    line = " ".join(shlex.quote(c) for c in cmd) + f" cat {shlex.quote(path)} | wc -c"
    start = time.perf_counter()
    out = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, timeout=3600)
    elapsed = time.perf_counter() - start
    got = int(out.stdout.strip() or 0)
    if out.returncode != 0 or got != size:
        raise SystemExit(f"transfer failed ({got} of {size} bytes): {out.stderr.decode()[-500:]}")
    return size / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the gateway during the last Airlock run (collapsed stacks)",
    )
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    world = build()
    from tests.support.sshd import DEVICE_USER

    path = f"/home/{DEVICE_USER}/airlock-bench-{os.getpid()}.txt"
    try:
        make_file(path, size)
        paths = world.paths()
        results: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.runs):
            for name, cmd in paths.items():
                spy = None
                if args.profile and name == "airlock" and i == args.runs - 1:
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(world.gateway_pid()),
                            "-o",
                            args.profile,
                            "--format",
                            "raw",
                            "-r",
                            "200",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1)
                results[name].append(run(cmd, path, size))
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(60)
                print(f"run {i + 1}: {name:9s} {results[name][-1]:8.1f} MB/s", flush=True)
        med = {name: statistics.median(v) for name, v in results.items()}
        print(
            f"\n{args.mib} MiB of output, median of {args.runs} runs, cipher aes128-gcm on every leg"
        )
        for name in paths:
            print(f"  {name:9s} {med[name]:8.1f} MB/s")
        print(f"  airlock / proxyjump = {med['airlock'] / med['proxyjump']:.2f}  (target >= 0.80)")
        print(f"  airlock / direct    = {med['airlock'] / med['direct']:.2f}")
        print(
            f"  recordings written: {sum(f.stat().st_size for f in (world.tmp / 'var' / 'recordings').rglob('*.cast')) / 1e6:.0f} MB"
        )
    finally:
        if os.path.exists(path):
            os.unlink(path)
        world.stop()


if __name__ == "__main__":
    main()
