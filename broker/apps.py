from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class BrokerConfig(AppConfig):
    default = True
    name = "broker"
    verbose_name = "Airlock access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # System checks only (see STYLE.md): the deploy checks refuse unsafe
        # production settings. Receivers for third-party events live in
        # broker.identity and are connected there.
        from broker import (
            checks,  # noqa: F401
            identity,  # noqa: F401
        )


class AirlockAdminConfig(admin_apps.AdminConfig):
    """The Django admin, behind OTP (django-otp's OTPAdminSite)."""

    default = False
    default_site = "broker.admin_site.AirlockAdminSite"
