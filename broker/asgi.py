"""ASGI entry point: HTTP through Django, websockets through Channels.

Websocket consumers authenticate themselves (user, OTP verification, Origin,
authorize()); AuthMiddlewareStack only loads the session user. The lifespan
start-up removes remote desktops a dead broker process left behind
(sessions.doors.rdp.desktop.clean_up_at_start)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "broker.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from sessions.doors.rdp.desktop import lifespan  # noqa: E402
from sessions.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
        "lifespan": lifespan,
    }
)
