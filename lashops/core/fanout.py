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
publisher's sequence makes the hub tell its subscribers ``resync()``, and they catch up from the
durable event table (live-lane deltas are not stored; the page reloads committed state instead).

The layer can also lose the membership itself: a Redis restart (or ``FLUSHDB``) wipes every group,
and from then on nothing reaches this process, with no error (a read blocked across the restart is
retried by redis-py and just waits). So a watcher checks, every ``LASHOPS_FANOUT_CHECK_SECONDS``,
that each feed's channel is still in its group (one pipelined ``ZSCORE`` per Redis shard; for the
in-memory layer, a dict look-up), and at once after a failed read. A feed that lost its membership,
whose read failed, or whose first join failed (the layer was down) is *stale*: its messages are
held, and as soon as the layer answers the hub joins the group again, tells its subscribers to
``resync()`` (they catch up from the database to the cursor committed now), then releases what it
held, so every durable event reaches each socket once, in order. The watcher also renews the
membership before channels-redis expires it (a day by default).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import weakref
from typing import Any, Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

RENEW_EVERY = 3600.0  # seconds between group_add renewals (channels-redis group_expiry is 86400)
ORIGINS_REMEMBERED = 1000  # publishers whose sequence a group remembers
RETRY_DELAY = 0.5  # after a failed read from the layer
HELD_MAX = 10_000  # messages a stale feed holds; past that they are dropped (the resync covers them)


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
        self.joined = asyncio.Event()  # the first join was tried (it may have failed: see stale)
        self.reader: asyncio.Task | None = None
        self.seqs: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.joined_at = 0.0  # time.time() of the last group_add that succeeded
        # Not (known to be) a member, or messages may have been lost: join again, then resync.
        # While stale, what the reader gets is held, to go out after the subscribers' catch-up.
        self.stale = False
        self.held: list[dict[str, Any]] = []

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


def check_seconds() -> float:
    return float(getattr(settings, "LASHOPS_FANOUT_CHECK_SECONDS", 1.0))


class Hub:
    """The process's subscriptions on one event loop (the server's)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.feeds: dict[str, _Feed] = {}
        self.watcher: asyncio.Task | None = None
        self.wake = asyncio.Event()

    async def subscribe(self, group: str, subscriber: Subscriber) -> None:
        """Returns once the layer delivers the group's messages to this process, or, when the
        layer is down, once the feed is set to join as soon as the layer is back (the subscriber
        is then told to ``resync``)."""
        feed = self.feeds.get(group)
        if feed is None:
            feed = self.feeds[group] = _Feed(group)
            feed.members.add(subscriber)
            try:
                feed.channel = await self.layer.new_channel()
                try:
                    await self._join(feed)
                except Exception as exc:  # the layer is down: join (and resync) when it is back
                    log.warning("joining %s failed, joining again when the layer answers: %s", group, exc)
                    feed.stale = True
            except BaseException:
                if self.feeds.get(group) is feed:
                    del self.feeds[group]
                feed.joined.set()  # let waiters see the failure rather than hang
                raise
            feed.reader = asyncio.get_running_loop().create_task(self._read(feed), name=f"fanout:{group}")
            feed.joined.set()
            self._watch()
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

    async def _join(self, feed: _Feed) -> None:
        await self.layer.group_add(feed.group, feed.channel)
        feed.joined_at = time.time()

    async def _read(self, feed: _Feed) -> None:
        while True:
            try:
                message = await self.layer.receive(feed.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # What was in flight is gone, and a restarted layer has forgotten the membership:
                # the watcher joins again as soon as the layer answers, then the sockets catch up.
                log.warning(
                    "reading %s failed, joining again and catching up when the layer answers: %s", feed.group, exc
                )
                feed.stale = True
                self.wake.set()
                await asyncio.sleep(RETRY_DELAY)
                continue
            if feed.stale:
                if len(feed.held) < HELD_MAX:
                    feed.held.append(message)
                continue
            self._handle(feed, message)

    def _handle(self, feed: _Feed, message: dict[str, Any]) -> None:
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

    # --- the watcher: memberships lost with a restarted layer ----------------------------

    def _watch(self) -> None:
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.get_running_loop().create_task(self._watch_loop(), name="fanout:watcher")

    async def _watch_loop(self) -> None:
        while self.feeds:
            try:
                await asyncio.wait_for(self.wake.wait(), check_seconds())
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die: the next round tries again
                log.exception("checking the channel-layer memberships failed")

    async def check(self) -> None:
        """Join again every group whose membership the layer lost (and make its sockets catch up);
        renew memberships about to expire."""
        feeds = [feed for feed in self.feeds.values() if feed.joined.is_set() and feed.channel]
        if not feeds:
            return
        try:
            scores = await self._memberships(feeds)
        except Exception as exc:  # the layer is down: whatever it held may be gone when it is back
            log.warning("the channel layer does not answer, %d feeds join again when it does: %s", len(feeds), exc)
            for feed in feeds:
                feed.stale = True
            return
        now = time.time()
        expiry = float(getattr(self.layer, "group_expiry", 86400))
        renew_after = min(RENEW_EVERY, expiry / 2)
        for feed in feeds:
            if self.feeds.get(feed.group) is not feed:
                continue  # left while we awaited
            joined_at = scores.get(feed.group, feed.joined_at) if scores is not None else feed.joined_at
            if joined_at is None and not feed.stale:
                log.warning(
                    "%s lost its membership of %s (the layer restarted or was flushed)", feed.channel, feed.group
                )
                feed.stale = True
            if feed.stale:
                await self._rejoin(feed)
            elif now - joined_at > renew_after:  # type: ignore[operator]  # not stale: joined_at is set
                try:
                    await self._join(feed)
                except Exception as exc:
                    log.warning("renewing %s failed: %s", feed.group, exc)

    async def _rejoin(self, feed: _Feed) -> None:
        try:
            await self._join(feed)
        except Exception as exc:
            log.warning("joining %s again failed, trying again in %.1fs: %s", feed.group, check_seconds(), exc)
            return
        # Member again: what is published from now on arrives. Everything committed before is read
        # from the database by the subscribers' catch-up, queued ahead of what was held meanwhile.
        log.warning("joined %s again; %d sockets catch up from the database", feed.group, len(feed.members))
        feed.stale = False
        self._resync(feed, "layer_rejoined")
        held, feed.held = feed.held, []
        for message in held:
            self._handle(feed, message)

    async def _memberships(self, feeds: list[_Feed]) -> dict[str, float | None] | None:
        """When each feed's channel joined its group, as the layer has it (None: not a member);
        None when the layer cannot tell (channels-redis pub/sub, other layers)."""
        layer = self.layer
        if isinstance(layer, InMemoryChannelLayer):  # {group: {channel: joined_at}}
            return {feed.group: layer.groups.get(feed.group, {}).get(feed.channel) for feed in feeds}
        group_key = getattr(layer, "_group_key", None)
        if group_key is None or not hasattr(layer, "consistent_hash") or not hasattr(layer, "connection"):
            return None
        by_shard: dict[int, list[_Feed]] = {}
        for feed in feeds:
            by_shard.setdefault(layer.consistent_hash(feed.group), []).append(feed)
        found: dict[str, float | None] = {}
        for index, shard_feeds in by_shard.items():
            pipe = layer.connection(index).pipeline(transaction=False)
            for feed in shard_feeds:
                pipe.zscore(group_key(feed.group), feed.channel)
            scores = await pipe.execute()
            found.update({feed.group: score for feed, score in zip(shard_feeds, scores, strict=True)})
        return found


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub (one per server loop; tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None or found.layer is not get_channel_layer():
        found = _hubs[loop] = Hub()
    return found
