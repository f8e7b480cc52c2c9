"""TOTP seeds are sealed by the vault: the database never holds them in the clear."""

from django.db import connection

from broker.models import TOTPDevice
from tests.conftest import totp_now


def test_totp_seed_is_not_in_the_database_in_the_clear(make_user):
    user = make_user("sealed")
    device = TOTPDevice.objects.get(user=user)
    seed_hex = device.key
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM broker_totpdevice WHERE id = %s", [device.pk])
        row = cursor.fetchone()
    raw = b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row)
    assert seed_hex.encode() not in raw
    assert device.bin_key not in raw


def test_sealed_totp_device_accepts_a_current_code_once(make_user):
    user = make_user("once")
    device = TOTPDevice.objects.get(user=user)
    code = totp_now(device)
    assert device.verify_token(code)
    device.refresh_from_db()
    assert not device.verify_token(code)


def test_totp_device_refuses_a_non_hex_seed(make_user):
    user = make_user("nonhex", totp=False)
    device = TOTPDevice(user=user, name="phone")
    try:
        device.key = "not hex at all"
    except ValueError:
        pass
    else:
        raise AssertionError("a non-hex seed was accepted")
    assert not device.key_id


def test_otpauth_uri_carries_the_issuer_and_base32_secret(make_user):
    user = make_user("uri")
    device = TOTPDevice.objects.get(user=user)
    url = device.config_url
    assert url.startswith("otpauth://totp/Airlock%3Auri?secret=")
    assert "issuer=Airlock" in url


def test_rotating_the_vault_key_reseals_totp_seeds(make_user, settings):
    import base64
    import os

    from django.core.management import call_command

    from broker import vault

    user = make_user("rotated")
    device = TOTPDevice.objects.get(user=user)
    seed, old_id = device.key, device.key_id
    settings.VAULT_OLD_KEYS = [settings.VAULT_KEY]
    settings.VAULT_KEY = base64.b64encode(os.urandom(32)).decode()

    call_command("rotatevaultkey")

    settings.VAULT_OLD_KEYS = []
    device = TOTPDevice.objects.get(pk=device.pk)
    assert device.key_id == vault.current_key_id() != old_id
    assert device.key == seed


def test_backup_codes_are_stored_hashed_and_work_once(make_user):
    from broker.models import StaticDevice, StaticToken

    user = make_user("codes")
    device = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    StaticToken.objects.create(device=device, token="abcd2345")
    with connection.cursor() as cursor:
        cursor.execute("SELECT token_hash FROM broker_statictoken")
        assert "abcd2345" not in cursor.fetchone()[0]
    assert device.verify_token("ABCD2345")
    assert not device.verify_token("abcd2345")


def test_rotating_the_vault_key_reseals_sensor_secrets(db, settings):
    import base64
    import os

    from django.core.management import call_command

    from broker import vault
    from sessions.models import Sensor

    sensor = Sensor(name="zeek-1")
    sensor.set_secret("sensor-shared-secret")
    sensor.save()
    old_id = sensor.key_id
    settings.VAULT_OLD_KEYS = [settings.VAULT_KEY]
    settings.VAULT_KEY = base64.b64encode(os.urandom(32)).decode()

    call_command("rotatevaultkey")

    settings.VAULT_OLD_KEYS = []
    sensor = Sensor.objects.get(pk=sensor.pk)
    assert sensor.key_id == vault.current_key_id() != old_id
    assert sensor.secret() == "sensor-shared-secret"
