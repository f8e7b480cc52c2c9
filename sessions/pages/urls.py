from django.urls import path

from sessions.pages import connect, desktop, oversight, review

urlpatterns = [
    path("api/signals/", oversight.signals_intake_view, name="signals-intake"),
    path("sessions/live/", oversight.live_sessions, name="live-sessions"),
    path("sessions/<uuid:code>/terminate/", oversight.terminate_session, name="session-terminate"),
    path("sessions/signals/", oversight.signal_list, name="signals"),
    path("sessions/zones/<uuid:code>/policy/", oversight.zone_policy, name="zone-policy"),
    # browser terminal, live watch, recording review (sessions/pages/connect.py, review.py)
    path("access/grants/<uuid:code>/terminal/", connect.terminal, name="terminal"),
    path("sessions/", review.session_list, name="session-list"),
    path("sessions/evidence-key/", review.evidence_key, name="evidence-key"),
    path("sessions/<uuid:code>/", review.session_detail, name="session-detail"),
    path("sessions/<uuid:code>/recording.cast", review.session_recording, name="session-recording"),
    path("sessions/<uuid:code>/evidence.zip", review.session_evidence, name="session-evidence"),
    path("sessions/<uuid:code>/watch/", connect.watch, name="session-watch"),
    # browser RDP (sessions/pages/desktop.py)
    path("access/grants/<uuid:code>/desktop/", desktop.remote_desktop, name="remote-desktop"),
    path(
        "sessions/<uuid:code>/desktop-watch/",
        desktop.remote_desktop_watch,
        name="remote-desktop-watch",
    ),
]
