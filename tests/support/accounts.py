"""Account helpers shared by the enrolment and demo-seed tests."""

from __future__ import annotations

import base64
import json
from io import StringIO

from django.core.management import call_command
from django_otp.oath import totp


def code_from_secret(secret: str, offset: int = 0) -> str:
    """What an authenticator app computes from a printed base32 secret."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return str(totp(key, step=30, digits=6, drift=offset)).zfill(6)


def seed_json() -> dict:
    """Run `seed_demo --json` and return what it printed."""
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    return json.loads(out.getvalue())
