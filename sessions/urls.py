from django.urls import path

from sessions import portal_views, rdp_views, views

urlpatterns = [
    path("api/signals/", views.signals_intake_view, name="signals-intake"),
    path("sessions/live/", views.live_sessions, name="live-sessions"),
    path("sessions/<uuid:code>/terminate/", views.terminate_session, name="session-terminate"),
    path("sessions/signals/", views.signal_list, name="signals"),
    path("sessions/zones/<uuid:code>/policy/", views.zone_policy, name="zone-policy"),
    # browser terminal, live watch, recording review (sessions/portal_views.py)
    path("access/grants/<uuid:code>/terminal/", portal_views.terminal, name="terminal"),
    path("sessions/", portal_views.session_list, name="session-list"),
    path("sessions/evidence-key/", portal_views.evidence_key, name="evidence-key"),
    path("sessions/<uuid:code>/", portal_views.session_detail, name="session-detail"),
    path("sessions/<uuid:code>/recording.cast", portal_views.session_recording,
         name="session-recording"),
    path("sessions/<uuid:code>/evidence.zip", portal_views.session_evidence,
         name="session-evidence"),
    path("sessions/<uuid:code>/watch/", portal_views.watch, name="session-watch"),
    # browser RDP (sessions/rdp_views.py)
    path("access/grants/<uuid:code>/desktop/", rdp_views.remote_desktop, name="remote-desktop"),
    path("sessions/<uuid:code>/desktop-watch/", rdp_views.remote_desktop_watch,
         name="remote-desktop-watch"),
]
