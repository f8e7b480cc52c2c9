"""`manage.py seed_demo`: the demo people, printed with passwords and TOTP
secrets that work, the same on every run."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from io import StringIO
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.management import CommandError, call_command
from django_otp.oath import totp

from broker import audit
from broker.models import (
    AccessRequest,
    ApprovalRule,
    ApproverGroup,
    Grant,
    TOTPDevice,
    User,
    Vendor,
)
from tests.conftest import IN_CI, need
from tests.support.accounts import code_from_secret, seed_json


@pytest.fixture
def demo_var(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def by_username(data: dict) -> dict[str, dict]:
    return {a["username"]: a for a in data["accounts"]}


def test_seed_demo_json_lists_every_role_with_credentials(db, demo_var, settings):
    data = seed_json()
    assert data["portal"] == settings.PORTAL_URL
    assert sorted(a["role"] for a in data["accounts"]) == [
        "admin",
        "approver",
        "approver",
        "auditor",
        "vendor",
    ]
    for account in data["accounts"]:
        assert {"role", "username", "password", "totp_secret", "otpauth_uri", "groups"} <= set(
            account
        )
        assert len(account["password"]) >= 12
        assert isinstance(account["groups"], list)
        uri = urlparse(account["otpauth_uri"])
        assert uri.scheme == "otpauth" and uri.netloc == "totp"
        assert parse_qs(uri.query)["secret"] == [account["totp_secret"]]
        assert parse_qs(uri.query)["issuer"] == ["Airlock"]


def test_the_demo_people_have_the_roles_they_are_printed_with(db, demo_var):
    accounts = seed_json()["accounts"]
    users = {a["username"]: User.objects.get(username=a["username"]) for a in accounts}
    for account in accounts:
        assert users[account["username"]].roles == [account["role"]]
    vendor_user = users[next(a["username"] for a in accounts if a["role"] == "vendor")]
    assert vendor_user.vendor == Vendor.objects.get(name="Acme Automation")
    approvers = [a for a in accounts if a["role"] == "approver"]
    assert sorted(g for a in approvers for g in a["groups"]) == ["OT security", "Plant operations"]
    for approver in approvers:
        group = ApproverGroup.objects.get(name=approver["groups"][0])
        assert list(group.members.values_list("username", flat=True)) == [approver["username"]]
    admin = users[next(a["username"] for a in accounts if a["role"] == "admin")]
    assert admin.is_superuser and admin.is_staff
    auditor = users[next(a["username"] for a in accounts if a["role"] == "auditor")]
    assert auditor.is_auditor and not auditor.is_staff


def test_the_printed_passwords_and_totp_secrets_work(db, demo_var):
    for account in seed_json()["accounts"]:
        user = User.objects.get(username=account["username"])
        assert user.check_password(account["password"])
        device = TOTPDevice.objects.get(user=user)
        assert device.confirmed
        assert device.verify_token(code_from_secret(account["totp_secret"]))


def test_running_seed_demo_twice_gives_the_same_accounts_and_secrets(db, demo_var):
    first = seed_json()
    second = seed_json()
    assert second == first
    assert User.objects.count() == 5
    assert TOTPDevice.objects.count() == 5
    assert Vendor.objects.filter(name="Acme Automation").count() == 1


def test_seed_demo_repairs_a_changed_password_and_totp_device(db, demo_var):
    first = by_username(seed_json())
    vendor = User.objects.get(username="vendor")
    vendor.set_password("something else entirely")
    vendor.save()
    changed = TOTPDevice.objects.get(user=vendor)
    changed.key = "00" * 20
    changed.save()
    TOTPDevice.objects.create(user=vendor, name="another phone", confirmed=True)
    again = by_username(seed_json())
    assert again == first
    vendor.refresh_from_db()
    assert vendor.check_password(first["vendor"]["password"])
    assert TOTPDevice.objects.filter(user=vendor).count() == 1
    assert TOTPDevice.objects.get(user=vendor).verify_token(
        code_from_secret(first["vendor"]["totp_secret"])
    )


def test_the_demo_secrets_file_is_readable_by_the_owner_only(db, demo_var):
    data = seed_json()
    path = demo_var / "demo" / "accounts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())["secrets"]
    assert stored["password:vendor"] == by_username(data)["vendor"]["password"]


def test_a_fresh_database_with_the_same_var_directory_gets_the_same_secrets(db, demo_var):
    first = seed_json()
    TOTPDevice.objects.all().delete()
    Grant.objects.all().delete()  # the demo grant (sessions/demo/seed.py) and its request
    AccessRequest.objects.all().delete()
    ApprovalRule.objects.all().delete()  # the demo zone's policy names the groups
    ApproverGroup.objects.all().delete()
    User.objects.all().delete()
    assert seed_json()["accounts"] == first["accounts"]


def test_seed_demo_refuses_to_touch_a_real_account_of_the_same_name(db, demo_var):
    real = User.objects.create_user("admin", email="ada@plant.example", password="a real password!")
    with pytest.raises(CommandError, match="not a demo account"):
        seed_json()
    real.refresh_from_db()
    assert real.check_password("a real password!")
    assert not real.is_superuser
    # Nothing was half-created, and no secrets were remembered.
    assert not User.objects.filter(username="vendor").exists()
    assert not (demo_var / "demo" / "accounts.json").exists()


def test_a_damaged_secrets_file_is_a_clear_error(db, demo_var):
    (demo_var / "demo").mkdir()
    (demo_var / "demo" / "accounts.json").write_text("not json")
    with pytest.raises(CommandError, match="not a demo secrets file"):
        seed_json()


def test_creating_the_demo_people_is_audited_without_secrets(db, demo_var):
    data = seed_json()
    events = list(audit.AuditEvent.objects.filter(action="user.created"))
    assert sorted(e.target for e in events) == sorted(
        f"user:{a['username']}" for a in data["accounts"]
    )
    dumped = json.dumps([e.data for e in events])
    for account in data["accounts"]:
        assert account["password"] not in dumped
        assert account["totp_secret"] not in dumped
    assert audit.verify() is None


def test_the_human_output_shows_every_username_password_and_secret(db, demo_var):
    data = seed_json()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    for account in data["accounts"]:
        assert account["username"] in text
        assert account["password"] in text
        assert account["totp_secret"] in text
        assert account["otpauth_uri"] in text
    assert "oathtool --totp -b" in text


def test_oathtool_computes_a_code_the_demo_device_accepts(db, demo_var):
    """The README tells newcomers to use oathtool; the real tool must agree."""
    if not shutil.which("oathtool"):
        if IN_CI:
            pytest.fail("CI=true and oathtool is missing (apt-get install oathtool)")
        need("needs oathtool: apt-get install oathtool (`make test` does as root)")
    account = by_username(seed_json())["auditor"]
    code = subprocess.run(
        ["oathtool", "--totp", "-b", account["totp_secret"]],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()
    device = TOTPDevice.objects.get(user__username="auditor")
    assert device.verify_token(code)


def test_a_newcomer_signs_in_with_the_printed_demo_account(db, demo_var, client):
    vendor = by_username(seed_json())["vendor"]
    response = client.post(
        "/login/", {"username": vendor["username"], "password": vendor["password"]}
    )
    assert response.status_code == 302
    response = client.post(response["Location"], {"code": code_from_secret(vendor["totp_secret"])})
    assert response.status_code == 302
    home = client.get(response["Location"])
    assert home.status_code == 200
    assert home.wsgi_request.user.username == vendor["username"]
    assert home.wsgi_request.user.is_verified()
