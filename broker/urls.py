from django.contrib import admin
from django.urls import include, path

from broker import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    # identity (broker/views.py)
    path("login/", views.login_view, name="login"),
    path("login/otp/", views.login_otp, name="login-otp"),
    path("login/step-up/", views.login_step_up, name="login-step-up"),
    path("logout/", views.logout_view, name="logout"),
    path("invitation/<str:token>/", views.invitation, name="invitation"),
    path("enrol/", views.enrol, name="enrol"),
    path("enrol/backup-codes/", views.enrol_backup_codes, name="enrol-backup-codes"),
    path("profile/", views.profile, name="profile"),
    path("profile/totp/reset/", views.profile_totp_reset, name="profile-totp-reset"),
    path("profile/backup-codes/", views.profile_backup_codes, name="profile-backup-codes"),
    path("people/invite/", views.invite, name="invite"),
    path("audit/", views.audit_trail, name="audit-trail"),
    # access model (broker/portal_urls.py)
    path("access/", include("broker.portal_urls")),
    # live control: signal intake, oversight (sessions/urls.py)
    path("", include("sessions.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "broker.views.bad_request"
