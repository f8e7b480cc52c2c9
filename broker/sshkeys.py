"""Vendors' SSH public keys: parse, judge and register them.

A key is accepted only if asyncssh parses it as one OpenSSH public key line
of an algorithm we trust: Ed25519, ECDSA (NIST P-256/384/521) or RSA of at
least 2048 bits. DSA (fixed 1024 bits, deprecated by OpenSSH) and short RSA
are refused. A fingerprint (SHA256, as `ssh-keygen -l` prints it) identifies
a key across the whole broker: one key belongs to one person.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh
from django.db import IntegrityError, transaction

from broker import audit
from broker.models import SSHPublicKey, User

MIN_RSA_BITS = 2048
MAX_KEY_TEXT = 16 * 1024
ACCEPTED = {
    "ssh-ed25519": "Ed25519",
    "ecdsa-sha2-nistp256": "ECDSA P-256",
    "ecdsa-sha2-nistp384": "ECDSA P-384",
    "ecdsa-sha2-nistp521": "ECDSA P-521",
    "ssh-rsa": "RSA",
}


class KeyRejected(Exception):
    """The key cannot be registered; str() says why, in a sentence."""


@dataclass(frozen=True)
class ParsedKey:
    algorithm: str
    bits: int
    fingerprint: str
    openssh: str
    comment: str


def parse(text: str) -> ParsedKey:
    """Parse and judge one OpenSSH public key line, or raise KeyRejected."""
    text = (text or "").strip()
    if not text:
        raise KeyRejected("Paste your public key (the contents of a .pub file).")
    if len(text) > MAX_KEY_TEXT or len(text.splitlines()) > 1:
        raise KeyRejected("Paste exactly one public key line.")
    if "PRIVATE KEY" in text:
        raise KeyRejected("That is a private key. Never share it: paste the .pub file instead.")
    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise KeyRejected(
            "This is not an OpenSSH public key line "
            "(expected e.g. 'ssh-ed25519 AAAA... you@laptop')."
        ) from None
    algorithm = key.algorithm.decode("ascii", "replace")
    if algorithm not in ACCEPTED:
        if algorithm == "ssh-dss":
            raise KeyRejected(
                "DSA keys are too weak and are refused. "
                "Create an Ed25519 key: ssh-keygen -t ed25519"
            )
        raise KeyRejected(
            f"{algorithm} keys are not accepted; use Ed25519, ECDSA or RSA "
            f"of at least {MIN_RSA_BITS} bits."
        )
    bits = int(getattr(key.pyca_key, "key_size", 0) or (256 if algorithm == "ssh-ed25519" else 0))
    if algorithm == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise KeyRejected(
            f"This RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed. "
            "Create an Ed25519 key: ssh-keygen -t ed25519"
        )
    # Store the canonical "type base64" form; the comment is kept as a name.
    kind, body = key.export_public_key("openssh").decode().split()[:2]
    return ParsedKey(
        algorithm=algorithm,
        bits=bits,
        fingerprint=key.get_fingerprint("sha256"),
        openssh=f"{kind} {body}",
        comment=key.get_comment() or "",
    )


def label(algorithm: str, bits: int) -> str:
    name = ACCEPTED.get(algorithm, algorithm)
    return f"{name} {bits}" if algorithm == "ssh-rsa" else name


def register(
    user: User, text: str, *, name: str = "", source_ip: str | None = None
) -> SSHPublicKey:
    """Register a key for `user`, or raise KeyRejected (nothing saved).
    A key someone else registered is refused and audited: it may mean a
    shared key, or somebody trying to act as another person."""
    try:
        parsed = parse(text)
    except KeyRejected as exc:
        audit.record(
            "sshkey.rejected",
            actor=user,
            target=f"user:{user.username}",
            source_ip=source_ip,
            data={"why": str(exc)},
        )
        raise
    owner = SSHPublicKey.objects.filter(fingerprint=parsed.fingerprint).first()
    if owner is not None:
        if owner.user_id == user.pk:
            raise KeyRejected("You have already registered this key.")
        audit.record(
            "sshkey.duplicate_refused",
            actor=user,
            target=f"user:{user.username}",
            source_ip=source_ip,
            data={"fingerprint": parsed.fingerprint},
        )
        raise KeyRejected(
            "This key is registered to another account. Each person needs a key of their own."
        )
    try:
        with transaction.atomic():
            key = SSHPublicKey.objects.create(
                user=user,
                name=(name or parsed.comment)[:120],
                public_key=parsed.openssh,
                algorithm=parsed.algorithm,
                bits=parsed.bits,
                fingerprint=parsed.fingerprint,
            )
            audit.record(
                "sshkey.added",
                actor=user,
                target=f"user:{user.username}",
                source_ip=source_ip,
                data={"fingerprint": parsed.fingerprint, "algorithm": parsed.algorithm},
            )
    except IntegrityError:
        # Another request registered the same key a moment ago.
        raise KeyRejected("This key was just registered by another request.") from None
    return key


def delete(user: User, key: SSHPublicKey, *, source_ip: str | None = None) -> None:
    with transaction.atomic():
        deleted, _ = SSHPublicKey.objects.filter(pk=key.pk, user=user).delete()
        if deleted:
            audit.record(
                "sshkey.deleted",
                actor=user,
                target=f"user:{user.username}",
                source_ip=source_ip,
                data={"fingerprint": key.fingerprint},
            )
