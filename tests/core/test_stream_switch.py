"""The replay/live switch of ``ReplayingConsumer`` when live events arrive faster than the socket's
connect-time buffer holds, or when the fan-out asks for a resync while the socket is still
replaying: ``connect`` replays again from the database, and every event of the stream still reaches
the socket exactly once, in cursor order, on filtered streams (processes, a session) and on the
contiguous fleet stream."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.urls import path

from lashops.core import live
from lashops.core.consumers import FleetConsumer, LoopBindingMiddleware, WorkspaceAuthMiddleware
from lashops.core.events import publish
from processes_app.consumers import ProcessesConsumer
from sessions_app.consumers import SessionConsumer

pytestmark = pytest.mark.django_db(transaction=True)

FLOW = 12  # live events published while the socket replays (more than the tiny buffer below holds)
RESYNCS_WHILE_REPLAYING: list[str] = []


class _FlowDuringReplay:
    """After the first replay pass, publish ``FLOW`` events (and as many that belong to no followed
    stream) and wait until their live copies reached the still-buffering socket: what a busy stream
    does to a client that reconnects with its cursor."""

    flowed = False
    fresh_publisher = False

    def resync(self, reason: str) -> None:
        if self.buffering:
            RESYNCS_WHILE_REPLAYING.append(reason)
        super().resync(reason)

    async def _replay(self) -> int:
        replayed = await super()._replay()
        if not self.flowed:
            self.flowed = True
            if self.fresh_publisher:
                # A publisher that starts its count now (a worker started after the socket joined):
                # its first message to each group is number 1, so the hub sees no loss to resync.
                live._queues.pop(asyncio.get_running_loop(), None)
            await sync_to_async(_flow)(self.workspace, self.scope["url_route"]["kwargs"].get("session_id", "s1"))
            for _ in range(500):
                if self.buffer_overflow:
                    break
                await asyncio.sleep(0.01)
            assert self.buffer_overflow, "the test did not reach the second replay"
        return replayed


def _flow(workspace, session_id: str) -> None:
    for i in range(FLOW):
        publish(workspace=workspace, type="flow.tick", subject={"process": "p1", "session": session_id}, data={"i": i})
        publish(workspace=workspace, type="flow.other", subject={"session": "elsewhere"}, data={"i": i})


class FleetUnderFlow(_FlowDuringReplay, FleetConsumer):
    pass


class ProcessesUnderFlow(_FlowDuringReplay, ProcessesConsumer):
    pass


class SessionUnderFlow(_FlowDuringReplay, SessionConsumer):
    pass


CONSUMERS = {"fleet": FleetUnderFlow, "processes": ProcessesUnderFlow, "session": SessionUnderFlow}
application = LoopBindingMiddleware(
    AuthMiddlewareStack(
        WorkspaceAuthMiddleware(
            URLRouter(
                [
                    path("ws/fleet/", FleetUnderFlow.as_asgi()),
                    path("ws/processes/", ProcessesUnderFlow.as_asgi()),
                    path("ws/sessions/<str:session_id>/", SessionUnderFlow.as_asgi()),
                ]
            )
        )
    )
)
PATHS = {"fleet": "/ws/fleet/", "processes": "/ws/processes/", "session": "/ws/sessions/s1/"}


@pytest.fixture(autouse=True)
async def close_thread_connections(transactional_db):
    yield
    await sync_to_async(connections.close_all)()


def _stream_cursors(workspace, stream: str, after: int) -> list[int]:
    from lashops.core.models import Event

    rows = Event.objects.filter(workspace=workspace, cursor__gt=after)
    if stream == "processes":
        rows = rows.exclude(process_id="")
    elif stream == "session":
        rows = rows.filter(session_id="s1")
    return list(rows.order_by("cursor").values_list("cursor", flat=True))


async def _read_until_quiet(comm: WebsocketCommunicator) -> list[dict]:
    messages = []
    while not await comm.receive_nothing(timeout=1.0):
        messages.append(await comm.receive_json_from(timeout=1.0))
    return messages


@pytest.mark.parametrize("stream", ["processes", "session", "fleet"])
@pytest.mark.parametrize("trigger", ["buffer_overflow", "resync_while_replaying"])
async def test_a_second_replay_at_connect_sends_every_event_once_in_order(api_key, workspace, stream, trigger):
    from sessions_app.services import session_open

    consumer = CONSUMERS[stream]
    live.bind_loop(asyncio.get_running_loop())  # this test's publishes go through this loop's sender
    await sync_to_async(session_open)(workspace=workspace, session_id="s1")
    before = [
        await sync_to_async(publish)(
            workspace=workspace, type="flow.before", subject={"process": "p1", "session": "s1"}
        )
        for _ in range(3)
    ]
    RESYNCS_WHILE_REPLAYING.clear()
    if trigger == "buffer_overflow":
        # Only the buffer's size sends connect() back to the database: the flow comes from a sender
        # whose count starts at 1 for each group, so the hub sees no loss and asks for no resync.
        consumer.buffer_limit, consumer.fresh_publisher = 2, True
    else:
        # The flow continues the count of the sender that published ``before``: the hub hears that
        # publisher first mid-count and asks for a resync (as on a restarted server, where every
        # publisher is mid-count); the buffer is large, the resync alone sends connect() back.
        consumer.buffer_limit, consumer.fresh_publisher = None, False
    try:
        comm = WebsocketCommunicator(
            application, f"{PATHS[stream]}?after=0", headers=[(b"authorization", f"Bearer {api_key}".encode())]
        )
        if trigger == "buffer_overflow":
            # Drain the live copies of the rows published before the socket existed.
            await asyncio.sleep(0.2)
        assert (await comm.connect())[0]
        messages = await _read_until_quiet(comm)
        await comm.disconnect()
    finally:
        consumer.buffer_limit, consumer.fresh_publisher = None, False

    if trigger == "buffer_overflow":
        assert RESYNCS_WHILE_REPLAYING == []
    else:
        assert RESYNCS_WHILE_REPLAYING and set(RESYNCS_WHILE_REPLAYING) == {"layer_dropped"}
    assert len(before) == 3
    cursors = [m["cursor"] for m in messages if m.get("cursor") is not None]
    expected = await sync_to_async(_stream_cursors)(workspace, stream, 0)
    assert len(expected) >= FLOW + 3
    assert [m["type"] for m in messages if m["type"].startswith("stream.")] == ["stream.ready"]
    assert cursors == expected  # each once, in cursor order, none missing


async def test_a_catch_up_after_many_live_events_resends_none_of_them(api_key, workspace, monkeypatch):
    """A filtered socket remembers a bounded number of the cursors it sent live. A catch-up (here
    after the layer lost a message) must not start from a point older than what it remembers, or
    it sends the forgotten ones again."""
    from channels.layers import get_channel_layer

    from lashops.asgi import application as real_application
    from lashops.core import consumers
    from lashops.core.events import processes_group

    monkeypatch.setattr(consumers, "LIVE_DEDUPE_WINDOW", 5)
    layer = get_channel_layer()
    real_send = layer.group_send
    lost = []

    async def lossy_send(group, message):
        if group == processes_group(workspace.pk) and message["event"]["data"].get("i") == 8 and not lost:
            lost.append(message["seq"])
            return  # lost on the way
        await real_send(group, message)

    monkeypatch.setattr(layer, "group_send", lossy_send)
    comm = WebsocketCommunicator(
        real_application, "/ws/processes/", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=5))["type"] == "stream.ready"
    events = []
    for i in range(12):
        events.append(
            await sync_to_async(publish)(workspace=workspace, type="tick", subject={"process": "p1"}, data={"i": i})
        )
    messages = await _read_until_quiet(comm)
    await comm.disconnect()

    assert lost  # the layer really lost event 8's message
    assert [m["cursor"] for m in messages] == [e.cursor for e in events]
