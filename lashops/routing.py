"""WebSocket routes (the public paths are fixed in DESIGN.md)."""

from django.urls import path

from lashops.core.consumers import FleetConsumer
from mobs_app.consumers import MobConsoleConsumer
from processes_app.consumers import ProcessesConsumer
from sessions_app.consumers import SessionConsumer

websocket_urlpatterns = [
    path("ws/fleet/", FleetConsumer.as_asgi()),
    path("ws/processes/", ProcessesConsumer.as_asgi()),
    path("ws/sessions/<str:session_id>/", SessionConsumer.as_asgi()),
    path("ws/mobs/<str:mob_id>/console/", MobConsoleConsumer.as_asgi()),
]
