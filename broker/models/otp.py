"""Second factors: TOTP devices with vault-sealed seeds, and hashed backup codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from base64 import b32encode
from binascii import unhexlify
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.db import models
from django_otp.models import Device as OTPDevice
from django_otp.models import ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from django_otp.util import random_hex

# --- second factor --------------------------------------------------------------


class TOTPDevice(TimestampMixin, ThrottlingMixin, OTPDevice):
    """A TOTP authenticator whose seed is sealed by the vault (AES-GCM), so
    the database never holds it in the clear. Takes the place of django-otp's
    own TOTPDevice (which stores the seed as plain hex); django-otp finds it
    like any other Device. Verification is django-otp's TOTP algorithm."""

    VAULT_FIELDS = ("key_id", "sealed_key")  # re-sealed by vault.rotate()

    key_id = models.CharField(max_length=16, editable=False)
    sealed_key = models.BinaryField(editable=False)
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(
        default=-1, help_text="The time step of the last accepted code; a code is accepted once."
    )

    class Meta(OTPDevice.Meta):
        verbose_name = "TOTP authenticator"

    def __repr__(self) -> str:
        return f"<TOTPDevice {self.pk} user={self.user_id} seed=***>"

    @property
    def key(self) -> str:
        """The seed as hex. Generated on first use; sealed at once."""
        from broker import vault

        if not self.key_id:
            self.key = random_hex(20)
        return vault.open_blob(self.key_id, self.sealed_key)

    @key.setter
    def key(self, value: str) -> None:
        from broker import vault

        unhexlify(value.encode())  # refuse anything that is not hex
        self.key_id, self.sealed_key = vault.seal(value)

    @property
    def bin_key(self) -> bytes:
        return unhexlify(self.key.encode())

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.key_id:
            self.key = random_hex(20)
        super().save(*args, **kwargs)

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        try:
            value = int(token)
        except (TypeError, ValueError):
            verified = False
        else:
            totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
            totp.time = time.time()
            # Only codes after the last accepted one: a code works once.
            verified = totp.verify(value, self.tolerance, self.last_t + 1)
            if verified:
                self.last_t = totp.t()
                self.drift = totp.drift
                self.throttle_reset(commit=False)
                self.set_last_used_timestamp(commit=False)
                self.save()
        if not verified:
            self.throttle_increment(commit=True)
        return verified

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1)

    @property
    def config_url(self) -> str:
        """The otpauth:// URI an authenticator app scans."""
        issuer = settings.OTP_TOTP_ISSUER.replace(":", "")
        label = f"{issuer}:{self.user.get_username()}"
        params = urlencode(
            {
                "secret": b32encode(self.bin_key).decode().rstrip("="),
                "algorithm": "SHA1",
                "digits": self.digits,
                "period": self.step,
            }
        )
        return f"otpauth://totp/{quote(label)}?{params}&issuer={quote(issuer)}"


class StaticDevice(TimestampMixin, ThrottlingMixin, OTPDevice):
    """Backup codes: each works once. Only salted PBKDF2 hashes of the codes
    are stored (django-otp's own static plugin stores them in the clear)."""

    class Meta(OTPDevice.Meta):
        verbose_name = "backup codes"

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        text = str(token).strip().lower()
        match = next((t for t in self.token_set.all() if t.matches(text)), None)
        # Delete by compare-and-set: a code used twice at once works once.
        verified = match is not None and StaticToken.objects.filter(pk=match.pk).delete()[0] == 1
        if verified:
            self.throttle_reset()
        else:
            self.throttle_increment()
        return verified

    def get_throttle_factor(self) -> int:
        return getattr(settings, "OTP_STATIC_THROTTLE_FACTOR", 1)


class StaticToken(models.Model):
    """One backup code, stored as "salt$pbkdf2-sha256 hex"."""

    ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
    ITERATIONS = 20_000

    device = models.ForeignKey(StaticDevice, on_delete=models.CASCADE, related_name="token_set")
    token_hash = models.CharField(max_length=120)

    def __repr__(self) -> str:
        return f"<StaticToken {self.pk} device={self.device_id} code=***>"

    @classmethod
    def random_token(cls) -> str:
        return "".join(secrets.choice(cls.ALPHABET) for _ in range(8))

    @classmethod
    def _digest(cls, salt: str, token: str) -> str:
        return hashlib.pbkdf2_hmac("sha256", token.encode(), salt.encode(), cls.ITERATIONS).hex()

    @property
    def token(self) -> str:
        raise AttributeError("backup codes are stored hashed; they cannot be read back")

    @token.setter
    def token(self, value: str) -> None:
        salt = secrets.token_hex(8)
        self.token_hash = f"{salt}${self._digest(salt, value.strip().lower())}"

    def matches(self, token: str) -> bool:
        salt, _, digest = self.token_hash.partition("$")
        return hmac.compare_digest(digest, self._digest(salt, token))
