"""URLs of the access model's pages; broker/urls.py includes them at the root."""

from django.urls import path

from broker.pages import grants, home, keys, locks, requests, signin

urlpatterns = [
    path("", home.home, name="home"),
    path("healthz", home.healthz, name="healthz"),
    path("people/invite/", home.invite, name="invite"),
    path("audit/", home.audit_trail, name="audit-trail"),
    # signing in and second factors
    path("login/", signin.login_view, name="login"),
    path("login/otp/", signin.login_otp, name="login-otp"),
    path("login/step-up/", signin.login_step_up, name="login-step-up"),
    path("logout/", signin.logout_view, name="logout"),
    path("invitation/<str:token>/", signin.invitation, name="invitation"),
    path("enrol/", signin.enrol, name="enrol"),
    path("enrol/backup-codes/", signin.enrol_backup_codes, name="enrol-backup-codes"),
    path("profile/", signin.profile, name="profile"),
    path("profile/totp/reset/", signin.profile_totp_reset, name="profile-totp-reset"),
    path("profile/backup-codes/", signin.profile_backup_codes, name="profile-backup-codes"),
    # the access model, under /access/
    path("access/devices/", requests.device_list, name="device-list"),
    path("access/devices/<uuid:code>/request/", requests.request_new, name="request-new"),
    path("access/requests/", requests.request_list, name="request-list"),
    path("access/requests/<uuid:code>/", requests.request_detail, name="request-detail"),
    path("access/requests/<uuid:code>/cancel/", requests.request_cancel, name="request-cancel"),
    path("access/requests/<uuid:code>/decide/", requests.request_decide, name="request-decide"),
    path("access/queue/", requests.approval_queue, name="approval-queue"),
    path("access/grants/", grants.grant_list, name="grant-list"),
    path("access/grants/<uuid:code>/", grants.grant_detail, name="grant-detail"),
    path("access/grants/<uuid:code>/end/", grants.grant_end, name="grant-end"),
    path("access/grants/<uuid:code>/revoke/", grants.grant_revoke, name="grant-revoke"),
    path("access/keys/", keys.ssh_key_list, name="sshkey-list"),
    path("access/keys/new/", keys.ssh_key_new, name="sshkey-new"),
    path("access/keys/<uuid:code>/delete/", keys.ssh_key_delete, name="sshkey-delete"),
    path("access/locks/", locks.lock_list, name="lock-list"),
    path("access/locks/new/", locks.lock_new, name="lock-new"),
    path("access/locks/<uuid:code>/lift/", locks.lock_lift, name="lock-lift"),
]
