"""Websocket routes. Every consumer authenticates itself (user, OTP-verified
session, Origin, authorize()); codes in the paths are public UUIDs."""

from django.urls import path

from sessions.doors.rdp.consumer import RDPConsumer, RDPWatchConsumer
from sessions.doors.web.terminal import TerminalConsumer
from sessions.doors.web.watch import WatchConsumer

websocket_urlpatterns: list = [
    path("ws/terminal/<uuid:code>/", TerminalConsumer.as_asgi(), name="ws-terminal"),
    path("ws/watch/<uuid:code>/", WatchConsumer.as_asgi(), name="ws-watch"),
    path("ws/rdp/<uuid:code>/", RDPConsumer.as_asgi(), name="ws-rdp"),
    path("ws/rdp-watch/<uuid:code>/", RDPWatchConsumer.as_asgi(), name="ws-rdp-watch"),
]
