#!/usr/bin/env python3
"""Forward Zeek notices or Suricata alerts to Airlock's signal endpoint.

Standard library only, so it runs on the sensor host without installing
anything. It follows a JSON log file (Zeek's notice.log written as JSON, or
Suricata's eve.json), keeps the records that are signals (every Zeek
notice; Suricata records with "event_type": "alert"), and posts them in
batches signed as Airlock expects:

    X-Airlock-Sensor:    <sensor name>
    X-Airlock-Timestamp: <unix seconds>
    X-Airlock-Id:        <unique id>
    X-Airlock-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<id>." + body)>

The secret is read from a file (--secret-file) or an environment variable
(--secret-env, default AIRLOCK_SENSOR_SECRET), never from the command line.

    airlock-signal-forward.py --url https://airlock.plant.example \\
        --sensor zeek-ot-1 --secret-file /etc/airlock/zeek-ot-1.secret \\
        --follow /opt/zeek/logs/current/notice.log

--once sends what the file holds now and exits (for tests and cron).
A request Airlock refuses with 4xx is logged and skipped (retrying would not
help); network errors and 5xx are retried with back-off.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

MAX_BODY = 60 * 1024  # Airlock accepts 64 KiB; leave room
MAX_RECORDS = 200


def sign(secret: str, body: bytes) -> dict[str, str]:
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    mac = hmac.new(secret.encode(), f"{ts}.{nonce}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Airlock-Timestamp": ts,
        "X-Airlock-Id": nonce,
        "X-Airlock-Signature": f"sha256={mac}",
    }


def is_signal(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    if "event_type" in record:
        return record.get("event_type") == "alert"
    return "note" in record


def post(url: str, sensor: str, secret: str, lines: list[str]) -> bool:
    """True when Airlock took the batch (or refused it for good)."""
    body = ("\n".join(lines) + "\n").encode()
    headers = {"Content-Type": "application/json", "X-Airlock-Sensor": sensor, **sign(secret, body)}
    request = urllib.request.Request(
        url.rstrip("/") + "/api/signals/", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            print(f"sent {len(lines)} record(s): {response.read().decode()[:300]}", flush=True)
            return True
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 429 or exc.code >= 500:
            print(f"Airlock answered {exc.code} ({detail}); retrying", file=sys.stderr, flush=True)
            return False
        print(f"Airlock refused the batch with {exc.code}: {detail}", file=sys.stderr, flush=True)
        return True
    except OSError as exc:
        print(f"cannot reach Airlock ({exc}); retrying", file=sys.stderr, flush=True)
        return False


def batches(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and (size + len(line) + 1 > MAX_BODY or len(current) >= MAX_RECORDS):
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(current)
    return out


def send_all(args: argparse.Namespace, secret: str, lines: list[str]) -> None:
    for batch in batches([ln for ln in lines if is_signal(ln)]):
        delay = 1.0
        while not post(args.url, args.sensor, secret, batch):
            if args.once:
                raise SystemExit(1)
            time.sleep(delay)
            delay = min(delay * 2, 60)


def follow(args: argparse.Namespace, secret: str) -> None:
    path = args.follow
    handle = open(path, encoding="utf-8", errors="replace")
    if not args.from_start and not args.once:
        handle.seek(0, os.SEEK_END)
    inode = os.fstat(handle.fileno()).st_ino
    pending = ""
    while True:
        chunk = handle.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            send_all(args, secret, [ln for ln in complete if ln.strip()])
            continue
        if args.once:
            if pending.strip():
                send_all(args, secret, [pending])
            return
        time.sleep(1)
        try:  # the log was rotated: continue with the new file
            if os.stat(path).st_ino != inode:
                handle.close()
                handle = open(path, encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="Airlock's portal address")
    parser.add_argument("--sensor", required=True, help="the sensor's name in Airlock")
    parser.add_argument("--secret-file", help="file holding the sensor's secret")
    parser.add_argument(
        "--secret-env",
        default="AIRLOCK_SENSOR_SECRET",
        help="environment variable holding the secret",
    )
    parser.add_argument(
        "--follow", required=True, metavar="LOG", help="Zeek notice.log (JSON) or Suricata eve.json"
    )
    parser.add_argument(
        "--from-start", action="store_true", help="send the records already in the file too"
    )
    parser.add_argument("--once", action="store_true", help="send the file's records and exit")
    args = parser.parse_args()
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as fh:
            secret = fh.read().strip()
    else:
        secret = os.environ.get(args.secret_env, "")
    if not secret:
        parser.error(f"no secret: use --secret-file or set {args.secret_env}")
    follow(args, secret)


if __name__ == "__main__":
    main()
