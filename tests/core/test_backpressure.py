"""Outside daphne (here channels' WebsocketCommunicator) a consumer's write gate never waits and
nothing is logged; tests/live/test_stalled_socket.py covers the gate on a real daphne server."""

import functools
import logging

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator

from lashops.core.backpressure import OPEN, write_gate

# Channels closes stale database connections around every handler, whichever consumer it is.
pytestmark = pytest.mark.django_db


class GateProbe(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        gate = write_gate(self)
        await gate.wait()
        await self.accept()
        await self.send_json({"open": gate is OPEN})


async def test_a_consumer_outside_daphne_gets_the_open_gate_without_a_warning(caplog):
    comm = WebsocketCommunicator(GateProbe.as_asgi(), "/probe/")
    with caplog.at_level(logging.WARNING, logger="lashops.core.backpressure"):
        assert (await comm.connect())[0]
        assert await comm.receive_json_from(timeout=3) == {"open": True}
    await comm.disconnect()
    assert not caplog.records


async def test_the_gate_sees_daphne_through_every_send_wrapper_of_the_websocket_stack():
    """The socket stack of lashops.asgi wraps ``send`` three times (the database guard, channels'
    session middleware, the subprotocol answer); the gate must still find daphne's protocol behind
    them. Before wrap_send the guard's closure hid it: backpressure was off under daphne and a
    stalled client was never sent stream.gap (tests/live/test_stalled_socket.py[daphne] failed)."""
    from channels.auth import AuthMiddlewareStack
    from daphne.server import Server

    from lashops.core.backpressure import _daphne_protocol
    from lashops.core.consumers import WorkspaceAuthMiddleware
    from lashops.core.middleware import WebSocketDatabaseGuard

    protocol = object()
    daphne_send = functools.partial(Server(application=None, endpoints=["tcp:port=0"]).handle_reply, protocol)
    seen = {}

    async def app(scope, receive, send):
        seen["protocol"] = _daphne_protocol(send)

    stack = WebSocketDatabaseGuard(AuthMiddlewareStack(WorkspaceAuthMiddleware(app)))
    scope = {
        "type": "websocket",
        "path": "/ws/fleet/",
        "headers": [],
        "query_string": b"",
        "subprotocols": ["lashops.bearer", "lsk_unknown"],
    }

    async def receive():
        return {"type": "websocket.connect"}

    await stack(scope, receive, daphne_send)
    assert seen["protocol"] is protocol
