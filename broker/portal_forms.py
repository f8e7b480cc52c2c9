"""Forms of the access pages. Times are typed in the plant's local time
(native datetime-local pickers) and converted with the zone's time zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone

from broker.models import Device, Protocol, User, Vendor

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

    protocols = forms.MultipleChoiceField(choices=Protocol.choices, widget=forms.CheckboxSelectMultiple)
    start = forms.ChoiceField(
        choices=[(START_ON_APPROVAL, "From the moment it is approved"), (START_AT, "At a set time")],
        widget=forms.RadioSelect, initial=START_ON_APPROVAL,
    )
    starts_at = LocalDateTimeField(required=False, label="Start (plant time)")
    hours = forms.DecimalField(min_value=Decimal("0.25"), max_digits=5, decimal_places=2,
                               initial=Decimal("2"), label="Length (hours)",
                               widget=forms.NumberInput(attrs={"step": "0.25"}))
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}),
                             label="Reason or work-order reference")
    wants_upload = forms.BooleanField(required=False, label="I need to upload files to the device")
    wants_download = forms.BooleanField(required=False, label="I need to download files from the device")

    def __init__(self, *args, device: Device, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.device = device
        self.fields["protocols"].choices = [(p, Protocol(p).label) for p in device.protocols]
        if len(device.protocols) == 1:
            self.fields["protocols"].initial = list(device.protocols)
        self.fields["starts_at"].tz = device.zone.tzinfo
        # The picker offers nothing before now (the server checks it anyway).
        self.fields["starts_at"].widget = forms.DateTimeInput(attrs={
            "type": "datetime-local", "min": local_input(timezone.now(), device.zone.tzinfo)})
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
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

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
    public_key = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
                                 label="Public key (contents of your .pub file)", max_length=16384)


class LockForm(forms.Form):
    TTL_CHOICES = [("", "Until lifted"), ("60", "1 hour"), ("240", "4 hours"),
                   ("1440", "24 hours"), ("10080", "7 days")]

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
            raise forms.ValidationError("Choose exactly one thing to lock: a vendor, a user or a device.")
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
