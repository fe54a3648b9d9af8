"""Outside daphne (here channels' WebsocketCommunicator) a consumer's write gate never waits and
nothing is logged; tests/live/test_stalled_socket.py covers the gate on a real daphne server."""

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
