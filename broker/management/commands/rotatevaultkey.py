"""Re-encrypt every vaulted credential under the current vault key.

Production: set AIRLOCK_VAULT_KEY to the new key and AIRLOCK_VAULT_OLD_KEYS
to the old one(s), run this command, then drop the old keys.
Embedded default (keys under var/): `--generate` makes a new key, keeps the
old one in var/vault_old_keys (so it still decrypts) and re-encrypts.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from broker import audit, vault


class Command(BaseCommand):
    help = "Re-encrypt every vaulted credential under the current vault key."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--generate",
            action="store_true",
            help="Embedded mode only: generate a new key in var/vault_key, keep the old one "
            "in var/vault_old_keys, then re-encrypt.",
        )

    def handle(self, *args: Any, generate: bool = False, **options: Any) -> None:
        if generate:
            self._generate()
        try:
            with transaction.atomic():
                count = vault.rotate()
                audit.record(
                    "vault.rotated",
                    actor="system",
                    target="vault",
                    data={"key_id": vault.current_key_id(), "reencrypted": count},
                )
        except vault.VaultError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Re-encrypted {count} credential(s) under vault key {vault.current_key_id()}."
        )

    def _generate(self) -> None:
        if os.environ.get("AIRLOCK_VAULT_KEY") or os.environ.get("AIRLOCK_VAULT_KEY_FILE"):
            raise CommandError(
                "--generate is for the embedded key in var/; with "
                "AIRLOCK_VAULT_KEY set, change the variable instead "
                "(new key there, old key in AIRLOCK_VAULT_OLD_KEYS)."
            )
        from broker.settings import _new_vault_key

        old = settings.VAULT_KEY
        new = _new_vault_key()
        var = settings.VAR_DIR
        # Keep the old key first: a crash after this line leaves both readable.
        old_path = var / "vault_old_keys"
        fd = os.open(old_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(old + "\n")
        tmp = var / "vault_key.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new + "\n")
        os.replace(tmp, var / "vault_key")
        settings.VAULT_OLD_KEYS = [*settings.VAULT_OLD_KEYS, old]
        settings.VAULT_KEY = new
