"""URLs of the access pages, included under /access/ by broker/urls.py."""

from django.urls import path

from broker import portal_views as v

urlpatterns = [
    path("devices/", v.device_list, name="device-list"),
    path("devices/<uuid:code>/request/", v.request_new, name="request-new"),
    path("requests/", v.request_list, name="request-list"),
    path("requests/<uuid:code>/", v.request_detail, name="request-detail"),
    path("requests/<uuid:code>/cancel/", v.request_cancel, name="request-cancel"),
    path("requests/<uuid:code>/decide/", v.request_decide, name="request-decide"),
    path("queue/", v.approval_queue, name="approval-queue"),
    path("grants/", v.grant_list, name="grant-list"),
    path("grants/<uuid:code>/", v.grant_detail, name="grant-detail"),
    path("grants/<uuid:code>/end/", v.grant_end, name="grant-end"),
    path("grants/<uuid:code>/revoke/", v.grant_revoke, name="grant-revoke"),
    path("keys/", v.ssh_key_list, name="sshkey-list"),
    path("keys/new/", v.ssh_key_new, name="sshkey-new"),
    path("keys/<uuid:code>/delete/", v.ssh_key_delete, name="sshkey-delete"),
    path("locks/", v.lock_list, name="lock-list"),
    path("locks/new/", v.lock_new, name="lock-new"),
    path("locks/<uuid:code>/lift/", v.lock_lift, name="lock-lift"),
]
