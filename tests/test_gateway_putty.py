"""PuTTY's command-line client (plink, psftp from Debian's putty-tools)
through the gateway, as a Windows-based vendor would connect: the same
grant, key and host-key check as OpenSSH."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from broker.models import Grant
from sessions.models import Command
from tests.conftest import IN_CI
from tests.support.sshd import (  # noqa: F401
    Vendor,
    device_sshd,
    ended_sessions,
    gateway,
    make_ssh_vendor,
    vendor,
    wait_for,
)

pytestmark = [pytest.mark.sshd, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def putty(vendor: Vendor) -> list[str]:
    """plink's options for `vendor`: its key converted to PuTTY's format and
    the gateway's host key pinned by fingerprint (PuTTY keeps no known_hosts)."""
    if not all(shutil.which(tool) for tool in ("plink", "psftp", "puttygen")):
        reason = "PuTTY's tools are missing: apt-get install putty-tools (`make test` does as root)"
        pytest.fail(reason) if IN_CI else pytest.skip(reason)
    ppk = vendor.tmp / "vendor.ppk"
    subprocess.run(
        ["puttygen", str(vendor.key), "-O", "private", "-o", str(ppk)],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(vendor.known_hosts)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = listing.split()[1]
    return [
        "-batch",
        "-ssh",
        "-P",
        str(vendor.gateway_port),
        "-i",
        str(ppk),
        "-hostkey",
        fingerprint,
    ]


def test_plink_runs_a_command_through_the_gateway_and_it_is_recorded(vendor, putty):
    result = subprocess.run(
        ["plink", *putty, f"{vendor.login}@127.0.0.1", "echo hi-from-putty"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi-from-putty\n"
    session = wait_for(lambda: ended_sessions(vendor.user))[0]
    assert list(Command.objects.filter(session=session).values_list("text", flat=True)) == [
        "echo hi-from-putty"
    ]


def test_plink_refuses_a_gateway_with_another_host_key(vendor, putty):
    wrong = putty[:-1] + ["SHA256:" + "A" * 43]
    result = subprocess.run(
        ["plink", *wrong, f"{vendor.login}@127.0.0.1", "echo never"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"never" not in result.stdout
    assert not ended_sessions(vendor.user)


def test_plink_user_without_access_reads_the_reason_on_their_terminal(vendor, putty):
    import pexpect

    Grant.objects.filter(pk=vendor.grant.pk).update(
        revoked_at=vendor.grant.starts_at, revoke_reason="contract review"
    )
    # On a terminal, as a vendor runs it (plink prints the server's banner
    # only to a person, not to a pipe).
    args = [a for a in putty if a != "-batch"]
    child = pexpect.spawn(
        "plink", [*args, f"{vendor.login}@127.0.0.1", "echo never"], timeout=30, encoding="utf-8"
    )
    child.expect("access denied: your access to .* was revoked: contract review")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0
    assert "never" not in (child.before or "")
    assert not ended_sessions(vendor.user)


def test_psftp_downloads_a_file_from_the_device(vendor, putty, tmp_path: Path):
    Grant.objects.filter(pk=vendor.grant.pk).update(allow_download=True)
    script = tmp_path / "psftp-batch"
    target = tmp_path / "motd-copy"
    script.write_text(f"get /etc/hostname {target}\nquit\n")
    result = subprocess.run(
        ["psftp", *putty[:1], *putty[2:], "-b", str(script), f"{vendor.login}@127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == Path("/etc/hostname").read_bytes()
