"""A slow socket cannot stall publishers or other sockets: it is told of its gap instead."""

import asyncio
import time

import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import path

from lashops.asgi import application
from lashops.core.consumers import FleetConsumer, LoopBindingMiddleware, WorkspaceAuthMiddleware
from lashops.core.events import EventDraft, publish_many

pytestmark = pytest.mark.django_db(transaction=True)

TOTAL = 10_000


class SlowReaderFleetConsumer(FleetConsumer):
    """Writes to its socket slowly, like a client on a bad link."""

    async def transmit(self, payload, text=None):
        await asyncio.sleep(0.002)
        await super().transmit(payload, text)


slow_application = LoopBindingMiddleware(
    AuthMiddlewareStack(WorkspaceAuthMiddleware(URLRouter([path("ws/fleet/", SlowReaderFleetConsumer.as_asgi())])))
)


def _publish_all(workspace) -> float:
    started = time.monotonic()
    for batch in range(TOTAL // 100):
        publish_many(workspace=workspace, drafts=[EventDraft(type="load.tick", data={"b": batch})] * 100)
    return time.monotonic() - started


async def _read_cursors(comm: WebsocketCommunicator, until: int) -> list[int]:
    cursors = []
    while not cursors or cursors[-1] < until:
        message = await comm.receive_json_from(timeout=10)
        if message.get("cursor") is not None:
            cursors.append(message["cursor"])
    return cursors


async def test_ten_thousand_events_with_one_slow_reader(api_key, workspace, settings):
    from asgiref.sync import sync_to_async

    settings.LASHOPS_WS_SEND_QUEUE = 200
    headers = [(b"authorization", f"Bearer {api_key}".encode())]
    fast = [WebsocketCommunicator(application, "/ws/fleet/?after=0", headers=headers) for _ in range(2)]
    slow = WebsocketCommunicator(slow_application, "/ws/fleet/?after=0", headers=headers)
    for comm in [*fast, slow]:
        assert (await comm.connect())[0]
        assert (await comm.receive_json_from(timeout=3))["type"] == "stream.ready"

    publisher = asyncio.ensure_future(sync_to_async(_publish_all, thread_sensitive=False)(workspace))
    readers = [asyncio.ensure_future(_read_cursors(comm, TOTAL)) for comm in fast]
    elapsed = await asyncio.wait_for(publisher, timeout=120)
    received = await asyncio.wait_for(asyncio.gather(*readers), timeout=120)

    # Every fast socket saw every event once, in order.
    for cursors in received:
        assert cursors == list(range(1, TOTAL + 1))
    # The slow socket was told of its gap; what it did get is ordered and never duplicated.
    gap, seen = None, []
    while True:
        message = await slow.receive_json_from(timeout=10)
        if message["type"] == "stream.gap":
            gap = message["data"]
            break
        seen.append(message["cursor"])
    assert gap["reason"] == "slow_consumer" and gap["dropped"] > 0
    assert gap["requested_cursor"] == (seen[-1] if seen else 0)
    assert gap["latest_cursor"] > gap["requested_cursor"]
    assert seen == sorted(set(seen)) and len(seen) < TOTAL
    # The publisher finished long before the slow socket could have read everything.
    assert elapsed < TOTAL * 0.002
    for comm in [*fast, slow]:
        await comm.disconnect()
