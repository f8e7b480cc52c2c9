"""`manage.py verifyevidence bundle.zip --public-key KEY`: verify an evidence
bundle offline. Needs only the deployment's public key (a file or the key
itself: base64 of 32 bytes, or PEM) — no database, no signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions.evidence import bundle as evidence


class Command(BaseCommand):
    help = "Verify an Airlock evidence bundle with the deployment's public key."
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bundle", help="the evidence zip")
        parser.add_argument(
            "--public-key",
            required=True,
            metavar="KEY",
            help="the public key shown in the portal, or a file holding it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key_arg = options["public_key"]
        key_path = Path(key_arg)
        try:
            key_text = (
                key_path.read_text() if len(key_arg) < 4096 and key_path.is_file() else key_arg
            )
            public_key = evidence.load_public_key(key_text)
        except (OSError, evidence.SigningKeyError) as exc:
            raise CommandError(f"--public-key: {exc}") from None
        try:
            data = Path(options["bundle"]).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {options['bundle']}: {exc.strerror}") from None
        report = evidence.verify(data, public_key)
        if not report.ok:
            for member, what in report.problems:
                self.stderr.write(f"MISMATCH {member}: {what}")
            raise CommandError(f"the bundle does NOT verify: {len(report.problems)} problem(s)")
        for member in report.checked:
            self.stdout.write(f"ok {member}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Verified: evidence for session {report.session} is intact and signed by "
                f"{evidence.public_key_fingerprint(public_key)}."
            )
        )
