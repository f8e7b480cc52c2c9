"""Admin for live control: sensors (their secret is generated here and shown
once), zones' response rules and command rules; signals and gateways are
read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from broker import audit
from broker.admin import AuditedAdmin, ReadOnlyAdmin
from broker.identity import client_ip
from sessions.anomalies.models import CommandRule, Gateway, ResponseRule, Sensor, Signal


def _show_secret_once(request: HttpRequest, sensor: Sensor, secret: str) -> None:
    messages.warning(
        request,
        f"Secret of sensor {sensor.name} (shown only now; store it in the "
        f"sensor's configuration): {secret}",
    )


@admin.register(Sensor)
class SensorAdmin(AuditedAdmin):
    list_display = ["name", "description", "is_active", "rate_per_minute", "last_seen_at"]
    fields = [
        "name",
        "description",
        "is_active",
        "zones",
        "rate_per_minute",
        "last_seen_at",
        "created_at",
    ]
    filter_horizontal = ["zones"]
    readonly_fields = ["last_seen_at", "created_at"]
    actions = ["rotate_secret"]

    def save_model(self, request: HttpRequest, obj: Sensor, form: Any, change: bool) -> None:
        secret = None
        if not change:
            secret = Sensor.new_secret()
            obj.set_secret(secret)
        super().save_model(request, obj, form, change)
        if secret:
            _show_secret_once(request, obj, secret)

    @admin.action(description="Generate a new secret (the old one stops working)")
    def rotate_secret(self, request: HttpRequest, queryset: Any) -> None:
        for sensor in queryset:
            secret = Sensor.new_secret()
            sensor.set_secret(secret)
            sensor.save(update_fields=["key_id", "ciphertext"])
            audit.record(
                "sensor.secret_rotated",
                actor=request.user,
                target=f"sensor:{sensor.name}",
                source_ip=client_ip(request),
            )
            _show_secret_once(request, sensor, secret)


class ResponseRuleForm(forms.ModelForm):
    actions = forms.MultipleChoiceField(
        choices=ResponseRule.Action.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ResponseRule
        fields = ["zone", "severity", "actions", "lock_minutes"]


@admin.register(ResponseRule)
class ResponseRuleAdmin(AuditedAdmin):
    form = ResponseRuleForm
    list_display = ["zone", "severity", "actions", "lock_minutes"]
    list_filter = ["zone", "severity"]


@admin.register(CommandRule)
class CommandRuleAdmin(AuditedAdmin):
    list_display = ["description", "zone", "pattern", "severity", "is_active"]
    list_filter = ["zone", "severity", "is_active"]


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ["at", "severity", "kind", "device", "origin", "sensor"]
    list_filter = ["severity", "origin", "format"]
    search_fields = ["kind", "detail", "device__slug"]


@admin.register(Gateway)
class GatewayAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "pid", "seen_at", "is_accepting", "stopped_at"]
