"""The credential vault: device secrets encrypted at rest with AES-256-GCM.

Every ciphertext is stored with the id of the key that sealed it, so the
keyring can hold the current key (settings.VAULT_KEY, used for sealing) and
old keys (settings.VAULT_OLD_KEYS, only for opening) while
`manage.py rotatevaultkey` re-encrypts everything under the current key.

A key id is a short hash of the key, never the key. The blob is
nonce (12 bytes) || ciphertext-with-tag; the key id is the associated data,
so a blob cannot be relabelled with another key's id.

Secrets leave this module only as the return value of `open_secret()`, for
the gateway to hand to the device. Errors never carry plaintext or keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

if TYPE_CHECKING:
    from broker.models import Credential

NONCE_BYTES = 12


class VaultError(Exception):
    """The vault cannot seal or open a secret (unknown key, tampered blob,
    bad key material). The message never contains the secret."""


def decode_key(text: str) -> bytes:
    """A vault key is 32 random bytes, written as base64."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError("a vault key is not valid base64") from None
    if len(raw) != 32:
        raise VaultError("a vault key must be 32 bytes (AES-256), base64-encoded")
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(b"airlock-vault-key-id:" + raw).hexdigest()[:12]


def keyring() -> tuple[str, dict[str, bytes]]:
    """(current key id, {key id: key}) from settings, read on each call so
    a changed setting takes effect without a restart of the module."""
    current = decode_key(settings.VAULT_KEY)
    keys = {key_id(current): current}
    for text in settings.VAULT_OLD_KEYS:
        if text.strip():
            raw = decode_key(text)
            keys.setdefault(key_id(raw), raw)
    return key_id(current), keys


def current_key_id() -> str:
    return keyring()[0]


def seal(plaintext: str) -> tuple[str, bytes]:
    """Encrypt under the current key; return (key id, blob)."""
    kid, keys = keyring()
    nonce = os.urandom(NONCE_BYTES)
    blob = nonce + AESGCM(keys[kid]).encrypt(nonce, plaintext.encode("utf-8"), kid.encode())
    return kid, blob


def open_blob(kid: str, blob: bytes) -> str:
    _, keys = keyring()
    key = keys.get(kid)
    if key is None:
        raise VaultError(
            f"the vault key {kid} is not in the keyring "
            "(add it to AIRLOCK_VAULT_OLD_KEYS and run rotatevaultkey)"
        )
    blob = bytes(blob)
    try:
        plain = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], kid.encode())
    except InvalidTag:
        raise VaultError("a vaulted secret failed its integrity check") from None
    return plain.decode("utf-8")


def open_secret(credential: Credential) -> str:
    """The plaintext secret of a vaulted credential. Only the gateway calls
    this, at the moment it logs in to the device."""
    if not credential.key_id:
        raise VaultError(f"credential {credential.pk} has no secret set")
    return open_blob(credential.key_id, credential.ciphertext)


def sealed_models() -> list[tuple[type, str, str]]:
    """Every model that keeps a vaulted secret, as (model, key id field,
    ciphertext field). A model opts in with VAULT_FIELDS = (kid, blob)."""
    from django.apps import apps

    return [(m, *m.VAULT_FIELDS) for m in apps.get_models() if hasattr(m, "VAULT_FIELDS")]


def rotate() -> int:
    """Re-encrypt every vaulted secret (device credentials, TOTP seeds,
    sensor secrets) not under the current key. Each row is a compare-and-set
    on its old key id, so a concurrent secret change wins. Returns how many
    rows were re-encrypted."""
    kid = current_key_id()
    done = 0
    for model, kid_field, blob_field in sealed_models():
        rows = model.objects.exclude(**{kid_field: kid}).exclude(**{kid_field: ""})
        for pk, old_kid, blob in rows.values_list("pk", kid_field, blob_field).iterator():
            new_kid, new_blob = seal(open_blob(old_kid, blob))
            done += model.objects.filter(pk=pk, **{kid_field: old_kid}).update(
                **{kid_field: new_kid, blob_field: new_blob}
            )
    return done
