"""Portal forms. Error messages are sentences a person can act on."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from broker.identity import REFUSAL_CONTRACT_ENDED
from broker.models import ApproverGroup, User, Vendor


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
        label="Code", max_length=32,
        widget=forms.TextInput(attrs={
            "autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True,
            "spellcheck": "false", "autocapitalize": "off",
        }),
        error_messages={"required": "Enter the code from your authenticator app."},
    )


class EnrolForm(OTPForm):
    code = forms.CharField(
        label="Code from your app", max_length=8,
        widget=forms.TextInput(attrs={
            "autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True,
            "pattern": "[0-9 ]*",
        }),
        error_messages={"required": "Enter the 6-digit code your app shows for Airlock."},
    )


class SetPasswordForm(forms.Form):
    """Choose a password (invitation). Django's validators, at least 12
    characters, checked against the future account's name and email."""

    password1 = forms.CharField(
        label="New password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "autofocus": True}),
        help_text=password_validation.password_validators_help_text_html(),
        error_messages={"required": "Choose a password."},
    )
    password2 = forms.CharField(
        label="Repeat the password", strip=False,
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
        regex=r"^[a-z0-9][a-z0-9._-]{1,62}$", max_length=63,
        help_text="Lower-case letters, digits, dots, hyphens; used to sign in and for SSH "
        "(alice+device@gateway), so no '+' or '@'.",
        error_messages={"invalid": "Use 2–63 lower-case letters, digits, dots, underscores "
                                   "or hyphens, starting with a letter or digit."},
    )
    role = forms.ChoiceField(choices=Role.CHOICES, widget=forms.RadioSelect)
    vendor = forms.ModelChoiceField(queryset=Vendor.objects.all(), required=False,
                                    help_text="For vendor users: the company they work for.")
    approver_groups = forms.ModelMultipleChoiceField(
        queryset=ApproverGroup.objects.all(), required=False,
        widget=forms.CheckboxSelectMultiple, help_text="For approvers: at least one group.",
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
    action = forms.CharField(required=False, max_length=64,
                             help_text="Exact action, or a prefix ending in '.' (login.)")
    since = forms.DateField(required=False, label="From",
                            widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To (inclusive)",
                            widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise ValidationError("The start date is after the end date.")
        return data
