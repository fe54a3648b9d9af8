"""Fan-out inside a server process: one channel-layer subscription per stream group per
process, shared by every socket of the process that follows that stream.

A socket that joined the channel layer group itself made every ``group_send`` store one copy
per socket (channels-redis ``RedisChannelLayer``) and cost one Redis read per socket per event:
100 sockets on one mob console at 50 frames/s were 5,000 Redis reads a second in one server
process, which could not keep up (bench/fanout.py). Here the process joins each group once,
with one channel of its own; a reader task per group takes each message off the layer once,
encodes each event to JSON once, and hands it to the local subscribers, which only enqueue it
(``Subscriber.deliver`` never blocks, so one slow socket cannot hold the others up).

The layer's guarantees are kept, and what it may lose is detected: every message carries its
publisher's ``origin`` and a per-group ``seq`` (stamped by ``lashops.core.live``); a jump in a
publisher's sequence, or a failed read, makes the hub tell its subscribers ``resync()``, and
they catch up from the durable event table (live-lane deltas are not stored; the page reloads
committed state instead). Group membership expires in channels-redis (a day by default), so the
hub renews it while the group has subscribers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

RENEW_EVERY = 3600.0  # seconds between group_add renewals (channels-redis group_expiry is 86400)
ORIGINS_REMEMBERED = 1000  # publishers whose sequence a group remembers
RETRY_DELAY = 0.5  # after a failed read from the layer


class Subscriber(Protocol):
    def deliver(self, event: dict[str, Any], text: str) -> None:
        """Take one event (and its JSON text) for the socket; must not block."""

    def resync(self, reason: str) -> None:
        """Messages may have been lost: catch up from the durable store."""


class _Feed:
    """One group's subscription: its channel, its subscribers and its reader."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.channel = ""
        self.members: set[Subscriber] = set()
        self.joined = asyncio.Event()
        self.reader: asyncio.Task | None = None
        self.seqs: collections.OrderedDict[str, int] = collections.OrderedDict()

    def check_sequence(self, message: dict[str, Any]) -> bool:
        """True when this publisher's previous message for the group was the one before."""
        origin, seq = message.get("origin"), message.get("seq")
        if origin is None or seq is None:
            return True  # a publisher that does not stamp (another tool): nothing to check
        previous = self.seqs.pop(origin, None)
        self.seqs[origin] = seq
        if len(self.seqs) > ORIGINS_REMEMBERED:
            self.seqs.popitem(last=False)
        if seq == 1:
            return True  # a publisher's first message for the group (or it restarted its count)
        # A publisher first heard from mid-count may have sent something before it that was lost
        # after this process joined: catching up once per new publisher costs one query a socket.
        return previous is not None and seq == previous + 1


class Hub:
    """The process's subscriptions on one event loop (the server's)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.feeds: dict[str, _Feed] = {}
        self.renewer: asyncio.Task | None = None

    async def subscribe(self, group: str, subscriber: Subscriber) -> None:
        """Returns once the layer delivers the group's messages to this process."""
        feed = self.feeds.get(group)
        if feed is None:
            feed = self.feeds[group] = _Feed(group)
            feed.members.add(subscriber)
            try:
                feed.channel = await self.layer.new_channel()
                await self.layer.group_add(group, feed.channel)
            except BaseException:
                if self.feeds.get(group) is feed:
                    del self.feeds[group]
                feed.joined.set()  # let waiters see the failure rather than hang
                raise
            feed.reader = asyncio.get_running_loop().create_task(self._read(feed), name=f"fanout:{group}")
            feed.joined.set()
            if self.renewer is None or self.renewer.done():
                self.renewer = asyncio.get_running_loop().create_task(self._renew())
            return
        feed.members.add(subscriber)
        await feed.joined.wait()
        if self.feeds.get(group) is not feed:  # its first subscriber failed to join
            feed.members.discard(subscriber)
            await self.subscribe(group, subscriber)

    async def unsubscribe(self, group: str, subscriber: Subscriber) -> None:
        feed = self.feeds.get(group)
        if feed is None:
            return
        feed.members.discard(subscriber)
        if feed.members or not feed.joined.is_set():
            return
        del self.feeds[group]
        if feed.reader is not None:
            feed.reader.cancel()
        try:
            await self.layer.group_discard(group, feed.channel)
        except Exception as exc:  # the membership expires on its own
            log.warning("leaving %s failed: %s", group, exc)

    async def _read(self, feed: _Feed) -> None:
        while True:
            try:
                message = await self.layer.receive(feed.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading %s failed, subscribers catch up from the database: %s", feed.group, exc)
                self._resync(feed, "layer_error")
                await asyncio.sleep(RETRY_DELAY)
                continue
            try:
                if not feed.check_sequence(message):
                    self._resync(feed, "layer_dropped")
                self._dispatch(feed, message)
            except Exception:  # a malformed message: keep reading, let sockets catch up
                log.exception("handling a message on %s failed", feed.group)
                self._resync(feed, "bad_message")

    @staticmethod
    def _dispatch(feed: _Feed, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "stream.event":
            events = [message["event"]]
        elif kind == "stream.events":
            events = message["events"]
        else:
            log.warning("unexpected message on %s: %s", feed.group, kind)
            return
        members = list(feed.members)
        for event in events:
            text = json.dumps(event)  # once per event, not once per socket
            for member in members:
                try:
                    member.deliver(event, text)
                except Exception:  # one broken socket must not end the feed for the others
                    log.exception("delivering on %s failed", feed.group)

    @staticmethod
    def _resync(feed: _Feed, reason: str) -> None:
        for member in list(feed.members):
            member.resync(reason)

    async def _renew(self) -> None:
        while self.feeds:
            await asyncio.sleep(RENEW_EVERY)
            for feed in list(self.feeds.values()):
                if feed.joined.is_set() and feed.channel:
                    try:
                        await self.layer.group_add(feed.group, feed.channel)
                    except Exception as exc:
                        log.warning("renewing %s failed: %s", feed.group, exc)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub (one per server loop; tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None or found.layer is not get_channel_layer():
        found = _hubs[loop] = Hub()
    return found
