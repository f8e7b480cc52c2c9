"""The forms of the portal's pages: signing in, enrolment, invitations, the
audit filter, access requests and decisions, SSH keys, locks, list filters."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils import timezone

from broker.identity import REFUSAL_CONTRACT_ENDED
from broker.models import ApproverGroup, Device, Protocol, User, Vendor


class LoginForm(AuthenticationForm):
    """The password step. django-axes sees every attempt through
    authenticate(); a vendor whose contract ended gets a sentence that says
    so (only when the password was right)."""

    error_messages = {
        "invalid_login": "That username and password do not match. Check both and try again.",
        "inactive": "This account is disabled. Ask the plant's security team.",
    }

    def __init__(self, request: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.fields["username"].widget.attrs.update({"autofocus": True, "autocomplete": "username"})
        self.fields["password"].widget.attrs.update({"autocomplete": "current-password"})
        self.fields["username"].error_messages["required"] = "Enter your username."
        self.fields["password"].error_messages["required"] = "Enter your password."

    def get_invalid_login_error(self) -> ValidationError:
        if getattr(self.request, "airlock_refusal", None) == REFUSAL_CONTRACT_ENDED:
            vendor = getattr(self.request, "airlock_refused_vendor", "your company")
            return ValidationError(
                f"The contract of {vendor} with the plant has ended, so its accounts can no "
                "longer sign in. Ask your contact at the plant to renew it.",
                code="contract_ended",
            )
        return super().get_invalid_login_error()


class OTPForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "spellcheck": "false",
                "autocapitalize": "off",
            }
        ),
        error_messages={"required": "Enter the code from your authenticator app."},
    )


class EnrolForm(OTPForm):
    code = forms.CharField(
        label="Code from your app",
        max_length=8,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "pattern": "[0-9 ]*",
            }
        ),
        error_messages={"required": "Enter the 6-digit code your app shows for Airlock."},
    )


class SetPasswordForm(forms.Form):
    """Choose a password (invitation). Django's validators, at least 12
    characters, checked against the future account's name and email."""

    password1 = forms.CharField(
        label="New password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "autofocus": True}),
        help_text=password_validation.password_validators_help_text_html(),
        error_messages={"required": "Choose a password."},
    )
    password2 = forms.CharField(
        label="Repeat the password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        error_messages={"required": "Type the password a second time."},
    )

    def __init__(self, user: User, *args: Any, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        p1, p2 = data.get("password1"), data.get("password2")
        if p1 and p2 and p1 != p2:
            raise ValidationError("The two passwords differ. Type the same password twice.")
        if p1:
            try:
                password_validation.validate_password(p1, self.user)
            except ValidationError as e:
                self.add_error("password1", e)
        return data


class InvitationForm(forms.Form):
    """Who to invite, and as what."""

    class Role:
        VENDOR = "vendor"
        APPROVER = "approver"
        AUDITOR = "auditor"
        ADMIN = "admin"
        CHOICES = [
            (VENDOR, "Vendor user (one vendor company)"),
            (APPROVER, "Approver (one or more approver groups)"),
            (AUDITOR, "Auditor (read-only)"),
            (ADMIN, "Administrator"),
        ]

    email = forms.EmailField(label="Email address")
    username = forms.RegexField(
        regex=r"^[a-z0-9][a-z0-9._-]{1,62}$",
        max_length=63,
        help_text="Lower-case letters, digits, dots, hyphens; used to sign in and for SSH "
        "(alice+device@gateway), so no '+' or '@'.",
        error_messages={
            "invalid": "Use 2–63 lower-case letters, digits, dots, underscores "
            "or hyphens, starting with a letter or digit."
        },
    )
    role = forms.ChoiceField(choices=Role.CHOICES, widget=forms.RadioSelect)
    vendor = forms.ModelChoiceField(
        queryset=Vendor.objects.all(),
        required=False,
        help_text="For vendor users: the company they work for.",
    )
    approver_groups = forms.ModelMultipleChoiceField(
        queryset=ApproverGroup.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For approvers: at least one group.",
    )

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("Someone already has this username. Choose another.")
        return username

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        role = data.get("role")
        if role == self.Role.VENDOR and not data.get("vendor"):
            self.add_error("vendor", "Choose the vendor company this person works for.")
        if role == self.Role.APPROVER and not data.get("approver_groups"):
            self.add_error("approver_groups", "Choose at least one approver group.")
        if role != self.Role.VENDOR:
            data["vendor"] = None
        if role != self.Role.APPROVER:
            data["approver_groups"] = []
        return data


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(
        required=False, max_length=64, help_text="Exact action, or a prefix ending in '.' (login.)"
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise ValidationError("The start date is after the end date.")
        return data


LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


class LocalDateTimeField(forms.CharField):
    """A native <input type=datetime-local>, read in a given time zone."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"})

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("max_length", 32)
        super().__init__(*args, **kwargs)
        self.tz: ZoneInfo = ZoneInfo("UTC")

    def clean(self, value: str) -> datetime | None:
        text = super().clean(value)
        if not text:
            return None
        for fmt in (LOCAL_FORMAT, LOCAL_FORMAT + ":%S"):
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=self.tz)
            except ValueError:
                continue
        raise forms.ValidationError("Enter a date and time like 2026-11-24 14:00.")


def local_input(value: datetime, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime(LOCAL_FORMAT)


class AccessRequestForm(forms.Form):
    START_ON_APPROVAL = "approval"
    START_AT = "at"

    protocols = forms.MultipleChoiceField(
        choices=Protocol.choices, widget=forms.CheckboxSelectMultiple
    )
    start = forms.ChoiceField(
        choices=[
            (START_ON_APPROVAL, "From the moment it is approved"),
            (START_AT, "At a set time"),
        ],
        widget=forms.RadioSelect,
        initial=START_ON_APPROVAL,
    )
    starts_at = LocalDateTimeField(required=False, label="Start (plant time)")
    hours = forms.DecimalField(
        min_value=Decimal("0.25"),
        max_digits=5,
        decimal_places=2,
        initial=Decimal("2"),
        label="Length (hours)",
        widget=forms.NumberInput(attrs={"step": "0.25"}),
    )
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Reason or work-order reference",
    )
    wants_upload = forms.BooleanField(required=False, label="I need to upload files to the device")
    wants_download = forms.BooleanField(
        required=False, label="I need to download files from the device"
    )

    def __init__(self, *args, device: Device, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device = device
        self.fields["protocols"].choices = [(p, Protocol(p).label) for p in device.protocols]
        if len(device.protocols) == 1:
            self.fields["protocols"].initial = list(device.protocols)
        self.fields["starts_at"].tz = device.zone.tzinfo
        # The picker offers nothing before now (the server checks it anyway).
        self.fields["starts_at"].widget = forms.DateTimeInput(
            attrs={"type": "datetime-local", "min": local_input(timezone.now(), device.zone.tzinfo)}
        )
        max_hours = Decimal(device.zone.max_window.total_seconds()) / 3600
        self.fields["hours"].widget.attrs["max"] = f"{max_hours:g}"
        self.fields["hours"].help_text = f"At most {max_hours:g} hours in {device.zone.name}."

    def clean(self) -> dict:
        data = super().clean()
        if data.get("start") == self.START_AT and not data.get("starts_at"):
            self.add_error("starts_at", "Pick the start, or ask for access from approval.")
        if data.get("start") != self.START_AT:
            data["starts_at"] = None
        if data.get("hours") is not None:
            data["duration"] = timedelta(minutes=int(data["hours"] * 60))
        return data


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    ends_at = LocalDateTimeField(required=False, label="Shorten: end at (plant time)")
    allow_upload = forms.BooleanField(required=False, initial=True, label="Allow upload")
    allow_download = forms.BooleanField(required=False, initial=True, label="Allow download")
    note = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, *args, tz: ZoneInfo, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ends_at"].tz = tz

    def clean(self) -> dict:
        data = super().clean()
        if data.get("decision") == "deny" and not (data.get("note") or "").strip():
            self.add_error("note", "Say why you deny it: the vendor reads the note.")
        return data


class RevokeForm(forms.Form):
    reason = forms.CharField(max_length=300, label="Reason (the vendor sees it)")


class SSHKeyForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, label="Name (e.g. work laptop)")
    public_key = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        label="Public key (contents of your .pub file)",
        max_length=16384,
    )


class LockForm(forms.Form):
    TTL_CHOICES = [
        ("", "Until lifted"),
        ("60", "1 hour"),
        ("240", "4 hours"),
        ("1440", "24 hours"),
        ("10080", "7 days"),
    ]

    vendor = forms.ModelChoiceField(queryset=Vendor.objects.none(), required=False)
    user = forms.ModelChoiceField(queryset=User.objects.none(), required=False, label="Vendor user")
    device = forms.ModelChoiceField(queryset=Device.objects.none(), required=False)
    reason = forms.CharField(max_length=300, label="Reason (shown to whoever is locked out)")
    ttl = forms.ChoiceField(choices=TTL_CHOICES, required=False, label="Expires")

    def __init__(self, *args, actor: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["vendor"].queryset = Vendor.objects.all()
        self.fields["user"].queryset = User.objects.filter(vendor__isnull=False)
        self.fields["device"].queryset = Device.objects.visible_to(actor)

    def clean(self) -> dict:
        data = super().clean()
        chosen = [k for k in ("vendor", "user", "device") if data.get(k)]
        if len(chosen) != 1:
            raise forms.ValidationError(
                "Choose exactly one thing to lock: a vendor, a user or a device."
            )
        data["ttl_delta"] = timedelta(minutes=int(data["ttl"])) if data.get("ttl") else None
        return data


class ListFilterForm(forms.Form):
    """Filters for the read-only lists (auditors; everyone sees only what
    visible_to lets them)."""

    status = forms.ChoiceField(required=False, choices=[("", "Any status")])
    device = forms.CharField(required=False, max_length=63, label="Device slug")
    vendor = forms.CharField(required=False, max_length=120)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, statuses: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any status"), *statuses]
