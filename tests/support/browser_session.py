"""A portal session as the login views leave it, for browsers and websocket
clients in tests: the cookie value of a session that passed the password
and (with otp=True) the OTP step."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django_otp import devices_for_user


def session_cookie(user: Any, *, otp: bool = True) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[-1]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store["airlock_started_at"] = time.time()
    if otp:
        store["otp_device_id"] = next(devices_for_user(user)).persistent_id
        store["airlock_otp_at"] = time.time()
    store.create()
    return store.session_key
