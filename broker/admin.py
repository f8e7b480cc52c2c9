"""The Django admin (an OTPAdminSite, see broker/admin_site.py).

Sections: people (users, vendors, approver groups, invitations, second
factors) first; inventory and vault below. Changes to people are written to
the audit trail here, because the admin is where they happen.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from broker import audit
from broker.identity import client_ip
from broker.models import ApproverGroup, Invitation, StaticDevice, TOTPDevice, User, Vendor

# --- people ---------------------------------------------------------------------


# Only the names of changed fields are audited, never values (a password hash
# must not reach the trail).
def _audit_change(request: HttpRequest, action: str, obj: Any, changed: list[str]) -> None:
    audit.record(
        action,
        actor=request.user,
        target=f"{obj._meta.model_name}:{obj}",
        source_ip=client_ip(request),
        data={"changed": sorted(changed)} if changed else {},
    )


class AuditedAdmin(admin.ModelAdmin):
    """Writes "<model>.created/changed/deleted" events for admin edits."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        name = obj._meta.model_name
        _audit_change(
            request,
            f"{name}.{'changed' if change else 'created'}",
            obj,
            list(form.changed_data) if change else [],
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        label = f"{obj._meta.model_name}:{obj}"
        super().delete_model(request, obj)
        audit.record(
            f"{obj._meta.model_name}.deleted",
            actor=request.user,
            target=label,
            source_ip=client_ip(request),
        )

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        labels = [f"{o._meta.model_name}:{o}" for o in queryset]
        super().delete_queryset(request, queryset)
        for label in labels:
            audit.record(
                f"{label.split(':')[0]}.deleted",
                actor=request.user,
                target=label,
                source_ip=client_ip(request),
            )


class ApproverGroupMembershipInline(admin.TabularInline):
    model = ApproverGroup.members.through
    extra = 0
    verbose_name = "approver group membership"
    verbose_name_plural = "approver groups"


@admin.register(User)
class UserAdmin(AuditedAdmin, DjangoUserAdmin):
    list_display = [
        "username",
        "email",
        "vendor",
        "is_vendor_admin",
        "is_auditor",
        "is_staff",
        "is_active",
        "last_login",
    ]
    list_filter = ["is_active", "is_staff", "is_auditor", "vendor", "approver_groups"]
    search_fields = ["username", "email", "first_name", "last_name"]
    readonly_fields = ["code", "last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["username", "password", "code"]}),
        ("Person", {"fields": ["first_name", "last_name", "email"]}),
        (
            "Role",
            {
                "fields": [
                    "vendor",
                    "is_vendor_admin",
                    "is_auditor",
                    "is_staff",
                    "is_superuser",
                    "is_active",
                ],
                "description": "A vendor user belongs to one vendor and cannot be an auditor, "
                "admin or approver; a vendor admin sees the whole company's sessions. Approvers are made by adding approver groups below.",
            },
        ),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    inlines = [ApproverGroupMembershipInline]
    actions = ["deactivate_users"]

    @admin.action(description="Deactivate the selected users (they cannot sign in)")
    def deactivate_users(self, request: HttpRequest, queryset: Any) -> None:
        for user in queryset.filter(is_active=True):
            if User.objects.filter(pk=user.pk, is_active=True).update(is_active=False) == 1:
                audit.record(
                    "user.changed",
                    actor=request.user,
                    target=f"user:{user}",
                    source_ip=client_ip(request),
                    data={"changed": ["is_active"]},
                )


@admin.register(Vendor)
class VendorAdmin(AuditedAdmin):
    list_display = ["name", "contract_ends_at", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["code", "created_at"]
    filter_horizontal = ["eligible_devices"]


@admin.register(ApproverGroup)
class ApproverGroupAdmin(AuditedAdmin):
    list_display = ["name"]
    search_fields = ["name"]
    readonly_fields = ["code"]
    filter_horizontal = ["members"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations are made on the portal's invite page (which emails the
    one-time link); here they are listed, and an unused one can be cancelled."""

    list_display = [
        "username",
        "email",
        "vendor",
        "is_auditor",
        "is_staff",
        "created_at",
        "expires_at",
        "used_at",
        "invited_by",
    ]
    list_filter = ["used_at", "vendor"]
    search_fields = ["username", "email"]
    readonly_fields = [f.name for f in Invitation._meta.fields if f.name != "token_hash"] + [
        "approver_groups"
    ]
    exclude = ["token_hash"]
    actions = ["cancel_invitations"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        return HttpResponseRedirect(reverse("invite"))

    @admin.action(description="Cancel the selected unused invitations")
    def cancel_invitations(self, request: HttpRequest, queryset: Any) -> None:
        from django.utils import timezone

        now = timezone.now()
        cancelled = 0
        for invitation in queryset.filter(used_at=None):
            # Expiring it now makes the link refuse, exactly like an old one.
            if (
                Invitation.objects.filter(pk=invitation.pk, used_at=None).update(expires_at=now)
                == 1
            ):
                cancelled += 1
                audit.record(
                    "invitation.cancelled",
                    actor=request.user,
                    target=f"invitation:{invitation.code}",
                    source_ip=client_ip(request),
                )
        messages.info(request, f"{cancelled} invitation(s) cancelled.")


# Second factors: listed so an admin can remove a lost authenticator (the
# person then enrols again at next sign-in). The seed is never shown.
for model in (TOTPDevice, StaticDevice):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(AuditedAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at"]
    readonly_fields = fields
    search_fields = ["user__username"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(StaticDevice)
class StaticDeviceAdmin(TOTPDeviceAdmin):
    pass


# --- inventory and vault ----------------------------------------------------------
# Sites, zones with their approval policy, devices with the pinned host key,
# the write-only vault, and read-only views of requests, grants and locks
# (those change through the portal's workflows, never by editing rows).

from django import forms  # noqa: E402
from django.utils.decorators import method_decorator  # noqa: E402
from django.utils.html import format_html  # noqa: E402
from django.views.decorators.debug import sensitive_post_parameters  # noqa: E402

from broker import approvals  # noqa: E402
from broker.identity import has_recent_otp  # noqa: E402
from broker.models import (  # noqa: E402
    AccessRequest,
    ApprovalRule,
    Credential,
    Device,
    Grant,
    Lock,
    Site,
    SSHPublicKey,
    Zone,
)


@admin.register(Site)
class SiteAdmin(AuditedAdmin):
    list_display = ["name", "slug", "timezone"]
    search_fields = ["name", "slug"]
    readonly_fields = ["code"]


class ApprovalRuleInline(admin.TabularInline):
    model = ApprovalRule
    extra = 1
    verbose_name = "approval rule (all must be met)"
    verbose_name_plural = "approval policy: every rule must be met"


@admin.register(Zone)
class ZoneAdmin(AuditedAdmin):
    list_display = ["name", "site", "policy", "max_window", "effective_timezone"]
    list_filter = ["site"]
    search_fields = ["name", "slug"]
    readonly_fields = ["code"]
    inlines = [ApprovalRuleInline]

    @admin.display(description="approval policy")
    def policy(self, zone: Zone) -> str:
        return (
            " AND ".join(str(rule) for rule in zone.approval_rules.all())
            or "— none: nobody can approve"
        )

    @admin.display(description="time zone")
    def effective_timezone(self, zone: Zone) -> str:
        return zone.timezone or f"{zone.site.timezone} (site)"

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is ApprovalRule and formset.has_changed():
            zone = form.instance
            audit.record(
                "zone.policy_changed",
                actor=request.user,
                target=f"zone:{zone.code}",
                source_ip=client_ip(request),
                data={"zone": str(zone), "policy": [str(r) for r in zone.approval_rules.all()]},
            )


class DeviceForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = "__all__"

    def clean_ssh_host_key(self) -> str:
        text = self.cleaned_data.get("ssh_host_key", "").strip()
        if text:
            import asyncssh

            try:
                key = asyncssh.import_public_key(text)
            except (asyncssh.KeyImportError, ValueError):
                raise forms.ValidationError(
                    "Paste the device's host key as one OpenSSH public key "
                    "line (e.g. from ssh-keyscan)."
                ) from None
            text = key.export_public_key("openssh").decode().strip()
        return text

    def clean_rdp_certificate_sha256(self) -> str:
        import re

        text = self.cleaned_data.get("rdp_certificate_sha256", "").strip()
        if not text:
            return ""
        digits = re.sub(r"[^0-9a-fA-F]", "", text.removeprefix("sha256:")).lower()
        if len(digits) != 64:
            raise forms.ValidationError(
                "A SHA-256 fingerprint has 64 hex digits (`manage.py pinrdpcert` shows it)."
            )
        return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


@admin.register(Device)
class DeviceAdmin(AuditedAdmin):
    form = DeviceForm
    list_display = [
        "slug",
        "name",
        "kind",
        "zone",
        "ssh_endpoint",
        "rdp_endpoint",
        "host_key_pinned",
        "is_active",
    ]
    list_filter = ["kind", "is_active", "zone__site", "zone"]
    search_fields = ["slug", "name", "ssh_host", "rdp_host"]
    readonly_fields = ["code"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "kind", "zone", "is_active", "code"]}),
        ("SSH", {"fields": ["ssh_host", "ssh_port", "ssh_host_key"]}),
        ("RDP", {"fields": ["rdp_host", "rdp_port", "rdp_security", "rdp_certificate_sha256"]}),
    ]

    @admin.display(description="SSH")
    def ssh_endpoint(self, device: Device) -> str:
        return f"{device.ssh_host}:{device.ssh_port}" if device.ssh_host else "—"

    @admin.display(description="RDP")
    def rdp_endpoint(self, device: Device) -> str:
        return f"{device.rdp_host}:{device.rdp_port}" if device.rdp_host else "—"

    @admin.display(description="host key pinned", boolean=True)
    def host_key_pinned(self, device: Device) -> bool:
        return bool(device.ssh_host_key)


class CredentialForm(forms.ModelForm):
    """Write-only: the secret is typed into `new_secret`, sealed by the
    vault, and never rendered back (not even masked)."""

    new_secret = forms.CharField(
        required=False,
        strip=False,
        label="New secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Password or private key. Leave empty to keep the stored secret.",
    )

    class Meta:
        model = Credential
        fields = ["device", "protocol", "username", "kind"]

    def clean(self) -> dict:
        data = super().clean()
        if not self.instance.pk and not data.get("new_secret"):
            self.add_error("new_secret", "A new credential needs its secret.")
        return data

    def save(self, commit: bool = True) -> Credential:
        credential = super().save(commit=False)
        if self.cleaned_data.get("new_secret"):
            credential.set_secret(self.cleaned_data["new_secret"])
        if commit:
            credential.save()
        return credential


@admin.register(Credential)
class CredentialAdmin(AuditedAdmin):
    form = CredentialForm
    list_display = ["device", "protocol", "username", "kind", "secret_status", "updated_at"]
    list_filter = ["protocol", "kind"]
    search_fields = ["device__slug", "username"]
    readonly_fields = ["secret_status", "updated_at"]
    fields = ["device", "protocol", "username", "kind", "new_secret", "secret_status", "updated_at"]

    @admin.display(description="secret")
    def secret_status(self, credential: Credential) -> str:
        if not credential.pk or not credential.has_secret:
            return "not set"
        return f"set (vault key {credential.key_id}) — type a new secret above to replace it"

    @method_decorator(sensitive_post_parameters("new_secret"))
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> Any:
        # The secret is kept out of error reports (sensitive_post_parameters).
        # Setting or replacing a vault secret needs a fresh OTP (step-up).
        if not has_recent_otp(request):
            from django.utils.http import urlencode

            return HttpResponseRedirect(
                f"{reverse('login-step-up')}?{urlencode({'next': request.get_full_path()})}"
            )
        return super().changeform_view(request, object_id, form_url, extra_context)


@admin.register(SSHPublicKey)
class SSHPublicKeyAdmin(AuditedAdmin):
    list_display = [
        "user",
        "name",
        "algorithm",
        "bits",
        "fingerprint",
        "created_at",
        "last_used_at",
    ]
    search_fields = ["user__username", "fingerprint", "name"]
    readonly_fields = [
        "code",
        "user",
        "public_key",
        "algorithm",
        "bits",
        "fingerprint",
        "created_at",
        "last_used_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # vendors register their own keys (with step-up) in the portal


class ReadOnlyAdmin(admin.ModelAdmin):
    """Requests, grants and locks change only through their workflows."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    list_display = ["code", "user", "device", "status", "starts_at", "duration", "created_at"]
    list_filter = ["status", "device__zone"]
    search_fields = ["user__username", "device__slug", "reason"]


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ["code", "user", "device", "starts_at", "ends_at", "revoked_at"]
    list_filter = ["device__zone"]
    search_fields = ["user__username", "device__slug"]


@admin.register(Lock)
class LockAdmin(ReadOnlyAdmin):
    list_display = ["target", "reason", "created_by", "created_at", "expires_at", "lifted_at"]
    list_filter = ["lifted_at"]
    search_fields = ["reason"]
    actions = ["lift_locks"]

    @admin.display(description="locks")
    def target(self, lock: Lock) -> str:
        return lock.target_label

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        extra_context = {
            **(extra_context or {}),
            "title": "Locks (create them on the portal's Locks page)",
        }
        return super().changelist_view(request, extra_context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Needed for the lift action on the list; rows stay read-only.
        return obj is None and request.user.is_superuser

    @admin.action(description="Lift the selected locks")
    def lift_locks(self, request: HttpRequest, queryset: Any) -> None:
        if not has_recent_otp(request):
            messages.error(
                request,
                format_html(
                    'Lifting a lock needs a fresh code: <a href="{}?next={}">confirm it is you</a>.',
                    reverse("login-step-up"),
                    request.get_full_path(),
                ),
            )
            return
        lifted = sum(
            approvals.lift_lock(request.user, lock, source_ip=client_ip(request))
            for lock in queryset
        )
        messages.info(request, f"{lifted} lock(s) lifted.")
