"""WebSocket routes (the public paths are fixed in DESIGN.md)."""

from django.urls import path

from lashops.core.consumers import FleetConsumer

websocket_urlpatterns = [
    path("ws/fleet/", FleetConsumer.as_asgi()),
]
