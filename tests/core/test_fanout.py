"""The per-process fan-out hub: a server process joins each stream group once, whatever the number
of its sockets, and what the channel layer loses is caught up from the database."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from lashops.asgi import application
from lashops.core import fanout
from lashops.core.events import processes_group, publish

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(key: str, path: str = "/ws/processes/") -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {key}".encode())])


async def _ready(comm: WebsocketCommunicator) -> None:
    assert (await comm.connect())[0]
    while (await comm.receive_json_from(timeout=5))["type"] != "stream.ready":
        pass


def _publish(workspace, i: int):
    return publish(workspace=workspace, type="process.tick", subject={"process": "p1"}, data={"i": i})


async def test_many_sockets_on_one_stream_are_one_layer_subscription(api_key, workspace):
    group = processes_group(workspace.pk)
    sockets = [_socket(api_key) for _ in range(20)]
    for comm in sockets:
        await _ready(comm)
    assert len(get_channel_layer().groups[group]) == 1

    event = await sync_to_async(_publish)(workspace, 1)
    for comm in sockets:
        message = await comm.receive_json_from(timeout=5)
        assert (message["cursor"], message["data"]) == (event.cursor, {"i": 1})
        assert await comm.receive_nothing(timeout=0.05)  # once, not once per socket

    for comm in sockets:
        await comm.disconnect()
    assert not get_channel_layer().groups.get(group)  # the last socket out leaves the group


@pytest.mark.parametrize("lost", [1, 2])
async def test_a_message_the_layer_lost_is_caught_up_from_the_database(api_key, workspace, monkeypatch, lost):
    """The layer drops one event's message (as a full or evicted Redis list would): the next
    message shows the publisher's sequence jumped (or, when the first was lost, starts past 1),
    and the filtered socket sends the lost event from the database, in order, once."""
    layer = get_channel_layer()
    real_send = layer.group_send
    sent = []

    async def lossy_send(group, message):
        if group == processes_group(workspace.pk):
            sent.append(message["seq"])
            if len(sent) == lost:
                return  # lost on the way
        await real_send(group, message)

    monkeypatch.setattr(layer, "group_send", lossy_send)
    comm = _socket(api_key)
    await _ready(comm)
    events = [await sync_to_async(_publish)(workspace, i) for i in range(3)]

    received = [(await comm.receive_json_from(timeout=5))["cursor"] for _ in range(3)]
    assert received == [e.cursor for e in events]
    assert await comm.receive_nothing(timeout=0.1)
    assert sent == [1, 2, 3]  # one sender, one sequence for the group
    await comm.disconnect()


async def test_a_failed_read_from_the_layer_makes_sockets_catch_up(api_key, workspace, monkeypatch):
    layer = get_channel_layer()
    real_receive = layer.receive
    failures = []

    async def flaky_receive(channel):
        message = await real_receive(channel)
        if message["event"]["data"]["i"] == 1 and not failures:
            failures.append(channel)
            raise ConnectionError("redis went away")  # the message is gone with the connection
        return message

    monkeypatch.setattr(layer, "receive", flaky_receive)
    comm = _socket(api_key)
    await _ready(comm)
    events = [await sync_to_async(_publish)(workspace, i) for i in range(3)]

    received = [(await comm.receive_json_from(timeout=5))["cursor"] for _ in range(3)]
    assert received == [e.cursor for e in events]
    assert failures and await comm.receive_nothing(timeout=0.1)
    await comm.disconnect()


def test_a_publishers_sequence_shows_a_loss_only_when_it_jumps():
    feed = fanout._Feed("g")
    assert feed.check_sequence({"origin": "a", "seq": 1})
    assert feed.check_sequence({"origin": "a", "seq": 2})
    assert not feed.check_sequence({"origin": "b", "seq": 3})  # heard of mid-count: catch up once
    assert feed.check_sequence({"origin": "b", "seq": 4})  # another publisher, its own count
    assert not feed.check_sequence({"origin": "a", "seq": 4})
    assert feed.check_sequence({"origin": "a", "seq": 1})  # the sender forgot the group: restarts
    assert feed.check_sequence({"type": "stream.event"})  # not stamped: nothing to check


class _Recorder:
    def __init__(self) -> None:
        self.got: list[int] = []

    def deliver(self, event, text) -> None:
        self.got.append(event["i"])

    def resync(self, reason) -> None:
        pass


class _Broken(_Recorder):
    def deliver(self, event, text) -> None:
        raise RuntimeError("a socket in a bad state")


async def test_a_subscriber_that_raises_does_not_end_the_feed_for_the_others():
    import asyncio

    hub, good, group = fanout.Hub(), _Recorder(), "tests.fanout.broken"
    await hub.subscribe(group, _Broken())
    await hub.subscribe(group, good)
    for i in range(3):
        await get_channel_layer().group_send(group, {"type": "stream.event", "event": {"i": i}})
    for _ in range(100):
        if len(good.got) == 3:
            break
        await asyncio.sleep(0.01)
    assert good.got == [0, 1, 2]
    await hub.unsubscribe(group, good)


async def test_a_malformed_message_does_not_end_the_feed():
    import asyncio

    hub, good, group = fanout.Hub(), _Recorder(), "tests.fanout.malformed"
    await hub.subscribe(group, good)
    layer = get_channel_layer()
    await layer.group_send(group, {"type": "stream.event"})  # no event in it
    await layer.group_send(group, {"type": "stream.event", "event": {"i": 7}})
    for _ in range(100):
        if good.got:
            break
        await asyncio.sleep(0.01)
    assert good.got == [7]
    await hub.unsubscribe(group, good)


@pytest.mark.parametrize("stream", ["/ws/processes/", "/ws/fleet/"])
async def test_a_membership_the_layer_lost_is_joined_again_and_sockets_catch_up(api_key, workspace, settings, stream):
    """The layer forgets the group (as a Redis restart or FLUSHALL does) and no read fails: the
    hub's check finds its channel gone, joins again, and the socket gets what was published
    meanwhile from the database, then live events again, each once and in order."""
    import asyncio

    settings.LASHOPS_FANOUT_CHECK_SECONDS = 0.05
    layer = get_channel_layer()
    comm = _socket(api_key, stream)
    await _ready(comm)
    first = await sync_to_async(_publish)(workspace, 0)
    assert (await comm.receive_json_from(timeout=5))["cursor"] == first.cursor

    layer.groups.clear()  # every membership gone, no error anywhere
    lost = [await sync_to_async(_publish)(workspace, i) for i in (1, 2)]
    caught_up = [(await comm.receive_json_from(timeout=5))["cursor"] for _ in lost]
    assert caught_up == [e.cursor for e in lost]
    for _ in range(100):  # joined again
        if any(layer.groups.values()):
            break
        await asyncio.sleep(0.01)
    after = await sync_to_async(_publish)(workspace, 3)
    assert (await comm.receive_json_from(timeout=5))["cursor"] == after.cursor
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()
