from django.apps import AppConfig


class SessionsConfig(AppConfig):
    # Django's own session framework owns the label "sessions".
    name = "sessions"
    label = "access_sessions"
    verbose_name = "Airlock sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # function-level: detectors import models, which need the app registry loaded.
        from sessions.anomalies import detectors

        # The session core calls these through sessions.live.hooks, so it does
        # not import the anomalies (which import the core's revocation).
        detectors.register_hooks()
