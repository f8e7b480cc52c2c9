"""A vendor's registered SSH public keys."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from broker import sshkeys
from broker.identity import client_ip, step_up_required
from broker.models import (
    SSHPublicKey,
)
from broker.pages.forms import (
    SSHKeyForm,
)
from broker.pages.guards import role_required

# --- SSH keys -------------------------------------------------------------------


@login_required
@role_required("vendor")
def ssh_key_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "broker/ssh_keys.html",
        {"keys": SSHPublicKey.objects.filter(user=request.user), "label": sshkeys.label},
    )


@login_required
@role_required("vendor")
@step_up_required
def ssh_key_new(request: HttpRequest) -> HttpResponse:
    form = SSHKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = sshkeys.register(
                request.user,
                form.cleaned_data["public_key"],
                name=form.cleaned_data["name"],
                source_ip=client_ip(request),
            )
        except sshkeys.KeyRejected as exc:
            form.add_error("public_key", str(exc))
        else:
            messages.success(request, f"Key {key.fingerprint} registered.")
            return redirect("sshkey-list")
    return render(
        request, "broker/ssh_key_form.html", {"form": form}, status=400 if form.errors else 200
    )


@login_required
@require_POST
@role_required("vendor")
def ssh_key_delete(request: HttpRequest, code: UUID) -> HttpResponse:
    key = get_object_or_404(SSHPublicKey.objects.filter(user=request.user), code=code)
    sshkeys.delete(request.user, key, source_ip=client_ip(request))
    messages.success(request, f"Key {key.fingerprint} deleted.")
    return redirect("sshkey-list")
