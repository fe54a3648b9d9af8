"""WebSocket plumbing shared by every stream: authentication, workspace scoping, and a
consumer that replays durable events after the client's cursor and then tails live ones
with no gap and no duplicate across the switch.

Protocol (server -> client, JSON):
* ``{"type": "stream.ready", "data": {"after", "latest_cursor", "replayed"}}`` once replay is done;
* each event envelope ``{"cursor", "type", "ts", "workspace", "subject", "data"}``; live-lane
  events carry ``"cursor": null, "live": true``;
* ``{"type": "stream.gap", "data": {"requested_cursor", "latest_cursor", "reason"}}`` when the
  cursor points into pruned history: reload state, then continue from ``latest_cursor``;
* ``{"type": "stream.gap", ... "reason": "slow_consumer", "dropped"}`` when the socket fell more
  than ``LASHOPS_WS_SEND_QUEUE`` messages behind: same recovery;
* ``{"type": "stream.error", "data": {"code", "message"}}`` then close (4400) for a bad cursor.
Unauthenticated sockets are refused at the handshake.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from lashops.core import live
from lashops.core.auth import bearer_token, workspace_for_user
from lashops.core.events import envelope
from lashops.core.models import Workspace
from lashops.core.selectors import events_after, latest_committed_cursor, stream_bounds
from lashops.core.services import api_key_authenticate

LIVE_DEDUPE_WINDOW = 10_000  # live cursors remembered per socket to drop duplicates


class LoopBindingMiddleware:
    """Records the server's event loop so runner threads can hand live sends to it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        live.bind_loop(asyncio.get_running_loop())
        return await self.app(scope, receive, send)


def query_params(scope: dict) -> dict[str, str]:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in raw.items()}


@database_sync_to_async
def _resolve_workspace(scope: dict) -> Workspace | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    params = query_params(scope)
    token = bearer_token(headers.get("authorization")) or params.get("token")
    if token:
        api_key = api_key_authenticate(plaintext=token)
        return api_key.workspace if api_key else None
    return workspace_for_user(scope.get("user"), params.get("workspace"))


class WorkspaceAuthMiddleware:
    """Puts ``scope["workspace"]`` from ``Authorization: Bearer``, ``?token=`` (for clients that
    cannot set headers) or the logged-in session user (``?workspace=`` to pick one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["workspace"] = await _resolve_workspace(scope)
        return await self.app(scope, receive, send)


class ReplayingConsumer(AsyncJsonWebsocketConsumer):
    """Base for every stream. Subclasses say which groups to join (``stream_groups``),
    which durable rows belong to the stream (``stream_filter``) and may authorise the
    subject (``authorize``).

    Live messages are taken off the channel layer at once into a bounded per-socket queue
    (``LASHOPS_WS_SEND_QUEUE``) drained by a writer task, so a slow socket never makes the
    layer's own buffer overflow silently and never slows a publisher. When the queue is full
    the socket is *behind*: what is queued and what arrives is dropped, and the client gets
    ``stream.gap`` (reason ``slow_consumer``) with ``latest_cursor``; it reloads state and
    continues from there (or fetches the missed range over HTTP from ``requested_cursor``).

    Streams whose cursors are contiguous (``contiguous = True``: the fleet stream holds every
    cursor of the workspace) also heal small holes, such as a message the channel layer
    dropped, by replaying the missing range from the database before forwarding."""

    contiguous = False
    workspace: Workspace
    last_sent: int
    buffering: bool
    buffer: list[dict[str, Any]]

    # --- subclass hooks ---------------------------------------------------------------

    def stream_groups(self) -> list[str]:
        raise NotImplementedError

    def stream_filter(self) -> dict[str, Any]:
        return {}

    async def authorize(self) -> bool:
        return True

    async def transmit(self, payload: dict[str, Any]) -> None:
        """Write one message to the socket (the one place sends go through)."""
        await self.send_json(payload)

    # --- lifecycle --------------------------------------------------------------------

    async def connect(self) -> None:
        workspace = self.scope.get("workspace")
        if workspace is None:
            await self.close()  # refused at the handshake (HTTP 403)
            return
        self.workspace = workspace
        if not await self.authorize():
            await self.close()
            return
        self.buffering = True
        self.buffer = []
        self.buffer_overflow = False
        self.behind = False
        self.dropped = 0
        self.joined: list[str] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=settings.LASHOPS_WS_SEND_QUEUE)
        self.writer: asyncio.Task | None = None
        await self.accept()
        params = query_params(self.scope)
        after_raw = params.get("after")
        pruned, latest = await database_sync_to_async(stream_bounds)(workspace=workspace)
        if after_raw is None or after_raw == "":
            after = await self._committed_cursor()  # no cursor: live from now
        else:
            try:
                after = int(after_raw)
                if after < 0:
                    raise ValueError
            except ValueError:
                await self._error("invalid_cursor", f"after must be a non-negative integer cursor, got {after_raw!r}")
                return
            if after > latest:
                await self._error("cursor_ahead", f"cursor {after} is past the end of this stream ({latest})")
                return
        # Join first, then replay: anything committed after the replay query arrives live and
        # is buffered; anything in both is dropped by cursor.
        for group in self.stream_groups():
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        if after < pruned:
            latest = await self._committed_cursor()
            await self.transmit(
                {
                    "type": "stream.gap",
                    "data": {"requested_cursor": after, "latest_cursor": latest, "reason": "trimmed"},
                }
            )
            after = latest
        self.last_sent = after
        replayed = await self._replay()
        # Everything at or below this cursor was in the replay: cursors are allocated under a row
        # lock, so no lower cursor can commit after a higher one became visible.
        self.replayed_through = self.last_sent
        self.sent_live: collections.OrderedDict[int, None] = collections.OrderedDict()
        while self.buffer_overflow:  # a long replay outran the buffer: replay again from the database
            self.buffer_overflow = False
            self.buffer = [e for e in self.buffer if e.get("cursor") is not None]
            replayed += await self._replay()
        await self.transmit(
            {"type": "stream.ready", "data": {"after": after, "latest_cursor": self.last_sent, "replayed": replayed}}
        )
        buffered, self.buffer = self.buffer, []
        self.buffering = False
        for event in buffered:
            await self._forward(event)
        self.writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def disconnect(self, code: int) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.cancel()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.transmit({"type": "pong", "data": {"latest_cursor": self.last_sent}})

    # --- replay and live --------------------------------------------------------------

    async def _replay(self) -> int:
        batch = settings.LASHOPS_WS_REPLAY_BATCH
        total = 0
        while True:
            rows, pruned = await self._load(self.last_sent, batch)
            if pruned > self.last_sent:
                # Retention deleted part of the range while we were reading it: say so.
                requested = self.last_sent
                self.last_sent = max(await self._committed_cursor(), requested)
                await self.transmit(
                    {
                        "type": "stream.gap",
                        "data": {"requested_cursor": requested, "latest_cursor": self.last_sent, "reason": "trimmed"},
                    }
                )
                continue
            for event in rows:
                await self.transmit(event)
                self.last_sent = event["cursor"]
            total += len(rows)
            if len(rows) < batch:
                return total

    @database_sync_to_async
    def _load(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Rows after ``after``, and the prune mark read *after* them: a prune deletes and raises
        the mark in one transaction, so a delete that hid rows from this read shows in the mark."""
        rows = events_after(workspace=self.workspace, after=after, limit=limit, **self.stream_filter())
        events = [envelope(e, self.workspace.slug) for e in rows]
        pruned, _ = stream_bounds(workspace=self.workspace)
        return events, pruned

    @database_sync_to_async
    def _committed_cursor(self) -> int:
        return latest_committed_cursor(workspace=self.workspace)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == "stream.event":
            # The hot path, once per event per socket. Channels runs close_old_connections() in the
            # one thread-sensitive executor before every handler: a thread hop per message that
            # serialised a 100-socket fan-out to ~0.4 ms a delivery (bench/fanout.py). This
            # handler never touches the ORM; what it triggers goes through database_sync_to_async,
            # which cleans connections up itself.
            await self.stream_event(message)
            return
        if message["type"] == "stream.events":  # several events of one commit (events._send_all)
            for event in message["events"]:
                await self.stream_event({"event": event})
            return
        await super().dispatch(message)

    async def stream_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if self.buffering:
            if len(self.buffer) >= settings.LASHOPS_WS_SEND_QUEUE:
                self.buffer_overflow = True
                return
            self.buffer.append(event)
            return
        if self.behind:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.behind = True
            self.dropped += 1

    async def _write_loop(self) -> None:
        while True:
            event = await self.queue.get()
            if self.behind:
                await self._resync()
                continue
            await self._forward(event)

    async def _resync(self) -> None:
        """The socket fell too far behind: drop what is queued and tell the client where to resume."""
        dropped = self.dropped + self.queue.qsize() + 1
        while not self.queue.empty():
            self.queue.get_nowait()
        requested = self.last_sent
        latest = max(await self._committed_cursor(), requested)
        self.last_sent = latest
        self.replayed_through = latest  # the client reloads state up to here
        self.dropped = 0
        self.behind = False
        await self.transmit(
            {
                "type": "stream.gap",
                "data": {
                    "requested_cursor": requested,
                    "latest_cursor": latest,
                    "reason": "slow_consumer",
                    "dropped": dropped,
                },
            }
        )

    async def _forward(self, event: dict[str, Any]) -> None:
        cursor = event.get("cursor")
        if cursor is None:
            await self.transmit(event)  # live lane
            return
        if self.contiguous:
            if cursor > self.last_sent + 1:
                await self._replay()  # heal a hole (a message the layer dropped) from the database
            if cursor <= self.last_sent:
                return  # already replayed
            self.last_sent = cursor
            await self.transmit(event)
            return
        # A filtered stream cannot see holes, and two publishing processes may deliver cursor N+1
        # before N: drop only what was replayed or already sent, never a late arrival.
        if cursor <= self.replayed_through or cursor in self.sent_live:
            return
        self.sent_live[cursor] = None
        if len(self.sent_live) > LIVE_DEDUPE_WINDOW:
            self.sent_live.popitem(last=False)
        self.last_sent = max(self.last_sent, cursor)
        await self.transmit(event)

    async def _error(self, code: str, message: str) -> None:
        await self.transmit({"type": "stream.error", "data": {"code": code, "message": message}})
        await self.close(code=4400)


class FleetConsumer(ReplayingConsumer):
    """/ws/fleet/: every durable event of the caller's workspace."""

    contiguous = True

    def stream_groups(self) -> list[str]:
        from lashops.core.events import fleet_group
        from lashops.core.heartbeat import WORKERS_GROUP

        return [fleet_group(self.workspace.pk), WORKERS_GROUP]
