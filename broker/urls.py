"""The root URLconf: the access model's pages (broker/pages/urls.py), the
sessions pages and the signal intake (sessions/pages/urls.py), the admin."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("broker.pages.urls")),
    path("", include("sessions.pages.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "broker.pages.home.bad_request"
