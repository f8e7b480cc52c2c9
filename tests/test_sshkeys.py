"""Vendors' SSH public keys: what is accepted, what is refused, and why."""

from __future__ import annotations

import asyncssh
import pytest

from broker import sshkeys
from broker.models import AuditEvent, SSHPublicKey

pytestmark = pytest.mark.both

DSA_KEY = (
    "ssh-dss AAAAB3NzaC1kc3MAAACBALDsTcXjEBHUt1Pm2IaQ1dcqURXVTa+04/u8h1jO1ga0LLlXkJ+CtQpX9iv9AOHt"
    "R4qWLGA+k0fg/B8jQt9B6d13a02KTq0QJyzDPM3Oq8fAoBsfziCMwV9Tbr1MzicEmVA18I+ewGAGN4NgEFhBSIyRoGVC"
    "dhLIIr34K0DfMUs3AAAAFQDLbrc14sUZsMirXnvsQHGjHqyXmQAAAIB0Y2Jk19KOOwrTZPXIabvwaewAMn45YLt73h/z"
    "8GeWiGlz0h8lV33ccPKjGI5ZPxmAZOEaVnJWECGs8PiONK827ynwc//oL/lMptjYOvFaVOFVIggtCxlY3nWD+5r35tyq"
    "N12JSfPIC2zH223FUdzzGRi3Es9hu7d3j97fuqOr1QAAAIEApdhlHqK+EEfqzC5vZSReP+o09H4X7PxsR1TlF+AzX2g+"
    "/XCnAka/yJGKzo7sotyJTNuW61HT7AnlA+LIS7tJF3SkcCqzk6af6gqY4wX9GIjUxkOBUeq5OephNPadzKumD507oeC2"
    "cutRUguXXNmn0+JvbR2qdNOm5hwKvZUjvP4= old@box"
)


def public_line(alg: str, **kw) -> str:
    key = asyncssh.generate_private_key(alg, comment="vera@laptop", **kw)
    return key.export_public_key().decode().strip()


@pytest.mark.parametrize(
    "alg,kw,bits",
    [
        ("ssh-ed25519", {}, 256),
        ("ecdsa-sha2-nistp256", {}, 256),
        ("ecdsa-sha2-nistp384", {}, 384),
        ("ssh-rsa", {"key_size": 2048}, 2048),
        ("ssh-rsa", {"key_size": 3072}, 3072),
    ],
)
def test_modern_keys_are_accepted_with_their_sha256_fingerprint(alg, kw, bits):
    line = public_line(alg, **kw)
    parsed = sshkeys.parse(line)
    assert parsed.algorithm == alg
    assert parsed.bits == bits
    assert parsed.fingerprint == asyncssh.import_public_key(line).get_fingerprint("sha256")
    assert parsed.fingerprint.startswith("SHA256:")
    assert parsed.comment == "vera@laptop"
    assert parsed.openssh == " ".join(line.split()[:2])


def test_dsa_keys_are_refused():
    with pytest.raises(sshkeys.KeyRejected, match="DSA"):
        sshkeys.parse(DSA_KEY)


def test_short_rsa_keys_are_refused():
    with pytest.raises(sshkeys.KeyRejected, match="1024 bits"):
        sshkeys.parse(public_line("ssh-rsa", key_size=1024))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "ssh-ed25519 notbase64!!",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_malformed_keys_are_refused_with_a_sentence(text):
    with pytest.raises(sshkeys.KeyRejected) as exc:
        sshkeys.parse(text)
    assert str(exc.value).endswith((".", "ed25519"))


def test_two_keys_pasted_at_once_are_refused():
    both = public_line("ssh-ed25519") + "\n" + public_line("ssh-ed25519")
    with pytest.raises(sshkeys.KeyRejected, match="exactly one"):
        sshkeys.parse(both)


def test_registering_stores_the_key_and_audits(make_vendor_user):
    vera = make_vendor_user("vera")
    line = public_line("ssh-ed25519")
    key = sshkeys.register(vera, line, name="laptop", source_ip="10.1.1.1")
    assert key.user == vera and key.name == "laptop" and key.last_used_at is None
    event = AuditEvent.objects.get(action="sshkey.added")
    assert event.data["fingerprint"] == key.fingerprint and event.source_ip == "10.1.1.1"


def test_a_key_registered_by_someone_else_is_refused_and_audited(make_vendor_user):
    vera, mallory = make_vendor_user("vera"), make_vendor_user("mallory")
    line = public_line("ssh-ed25519")
    sshkeys.register(vera, line)
    with pytest.raises(sshkeys.KeyRejected, match="another account"):
        sshkeys.register(mallory, line)
    assert SSHPublicKey.objects.filter(user=mallory).count() == 0
    assert AuditEvent.objects.filter(action="sshkey.duplicate_refused", actor="mallory").exists()


def test_registering_the_same_key_twice_says_so(make_vendor_user):
    vera = make_vendor_user("vera")
    line = public_line("ssh-ed25519")
    sshkeys.register(vera, line)
    with pytest.raises(sshkeys.KeyRejected, match="already registered"):
        sshkeys.register(vera, line)
    assert SSHPublicKey.objects.filter(user=vera).count() == 1


def test_a_weak_key_is_refused_audited_and_not_stored(make_vendor_user):
    vera = make_vendor_user("vera")
    with pytest.raises(sshkeys.KeyRejected):
        sshkeys.register(vera, DSA_KEY)
    assert not SSHPublicKey.objects.exists()
    assert AuditEvent.objects.filter(action="sshkey.rejected", actor="vera").exists()


def test_deleting_a_key_removes_only_ones_own(make_vendor_user):
    vera, mallory = make_vendor_user("vera"), make_vendor_user("mallory")
    key = sshkeys.register(vera, public_line("ssh-ed25519"))
    sshkeys.delete(mallory, key)
    assert SSHPublicKey.objects.filter(pk=key.pk).exists()
    sshkeys.delete(vera, key)
    assert not SSHPublicKey.objects.filter(pk=key.pk).exists()
    assert AuditEvent.objects.filter(action="sshkey.deleted", actor="vera").count() == 1
