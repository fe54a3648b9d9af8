"""A test-only ASGI application for tests/live/test_stalled_socket.py until ReplayingConsumer
waits on its socket's write gate itself: ``application`` is the fleet stream with every frame held
back by the gate (lashops.core.backpressure); ``ungated`` is the fleet stream as shipped."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from lashops.asgi import application as ungated
from lashops.asgi import django_asgi_app
from lashops.core.backpressure import write_gate
from lashops.core.consumers import FleetConsumer, LoopBindingMiddleware, WorkspaceAuthMiddleware

__all__ = ["application", "ungated"]


class GatedFleetConsumer(FleetConsumer):
    async def connect(self) -> None:
        self.gate = write_gate(self)
        await super().connect()

    async def transmit(self, *args: Any, **kwargs: Any) -> None:
        await self.gate.wait()  # the socket's buffer is full: hold the writer, let the queue fill
        await super().transmit(*args, **kwargs)


application = LoopBindingMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AuthMiddlewareStack(
                WorkspaceAuthMiddleware(URLRouter([path("ws/fleet/", GatedFleetConsumer.as_asgi())]))
            ),
        }
    )
)
