"""`manage.py sendsignal`: sign and post one signal to an Airlock portal,
as a sensor would (a documented example of the HMAC scheme, and a way to
try the response policy by hand).

    AIRLOCK_SENSOR_SECRET=... manage.py sendsignal --url http://127.0.0.1:8000 \\
        --sensor demo-sensor --device demo-plc --severity high --kind test \\
        --detail "testing the response policy"

`--body FILE` posts a file as it is instead (Zeek notice.log JSON lines,
Suricata eve.json, or a generic JSON object). The secret comes from an
environment variable (`--secret-env`, default AIRLOCK_SENSOR_SECRET) or a
file (`--secret-file`), never from the command line where `ps` shows it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions.anomalies.intake import signed_headers
from sessions.anomalies.models import Severity


class Command(BaseCommand):
    help = "Sign and post a signal to Airlock's /api/signals/ endpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="the portal, e.g. http://127.0.0.1:8000")
        parser.add_argument("--sensor", required=True)
        parser.add_argument("--secret-env", default="AIRLOCK_SENSOR_SECRET")
        parser.add_argument("--secret-file")
        parser.add_argument("--device", help="device slug or IP address")
        parser.add_argument("--severity", choices=Severity.values, default=Severity.LOW)
        parser.add_argument("--kind", default="manual")
        parser.add_argument("--detail", default="")
        parser.add_argument("--user", default="")
        parser.add_argument("--session", default="")
        parser.add_argument("--body", help="post this file as the body instead")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = self._secret(options)
        body = self._body(options)
        headers = signed_headers(
            options["sensor"], secret, body, timestamp=int(time.time()), nonce=uuid.uuid4().hex
        )
        request = urllib.request.Request(
            options["url"].rstrip("/") + "/api/signals/",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                self.stdout.write(f"{response.status} {response.read().decode()}")
        except urllib.error.HTTPError as exc:
            raise CommandError(
                f"Airlock answered {exc.code}: {exc.read().decode(errors='replace')[:500]}"
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot reach {options['url']}: {exc}") from None

    def _secret(self, options: dict[str, Any]) -> str:
        if options["secret_file"]:
            secret = Path(options["secret_file"]).read_text().strip()
        else:
            secret = os.environ.get(options["secret_env"], "")
        if not secret:
            raise CommandError(f"no secret: set {options['secret_env']} or use --secret-file")
        return secret

    def _body(self, options: dict[str, Any]) -> bytes:
        if options["body"]:
            return Path(options["body"]).read_bytes()
        if not options["device"]:
            raise CommandError("name the --device (slug or IP address), or post a --body file")
        record = {
            "device": options["device"],
            "severity": options["severity"],
            "kind": options["kind"],
            "detail": options["detail"],
        }
        for key in ("user", "session"):
            if options[key]:
                record[key] = options[key]
        return json.dumps(record).encode()
