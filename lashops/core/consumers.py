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
Authentication, at the handshake: ``Authorization: Bearer <key>``; the key in
``Sec-WebSocket-Protocol`` (offer ``lashops.bearer, <key>``: the server answers
``lashops.bearer``, never the key); ``?ticket=`` from ``POST /api/ws-tickets`` (single use,
short-lived; or offer ``lashops.ticket, <ticket>``); a logged-in session (``?workspace=`` to
pick one); ``?token=<key>`` still works, for compatibility, and the access log redacts it
(``lashops.core.access_log``). A socket whose credentials are missing or refused never opens:
servers that offer the ASGI denial response (uvicorn) answer HTTP 401 with
``{"error": {"code", "message"}}`` (``unauthorized``, ``invalid_key``, ``ticket_used``,
``ticket_expired``, ...); others (daphne) answer 403.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from lashops.core import backpressure, fanout, live
from lashops.core.auth import bearer_token, workspace_for_user
from lashops.core.errors import TicketRefused
from lashops.core.events import envelope
from lashops.core.models import Workspace
from lashops.core.selectors import events_after, latest_committed_cursor, stream_bounds
from lashops.core.services import api_key_authenticate, ws_ticket_redeem

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


BEARER_SUBPROTOCOL = "lashops.bearer"
TICKET_SUBPROTOCOL = "lashops.ticket"
DENIAL_EXTENSION = "websocket.http.response"
UNAUTHORIZED = (
    "unauthorized",
    "Authenticate with 'Authorization: Bearer <api key>', the Sec-WebSocket-Protocol pair "
    "'lashops.bearer, <api key>', '?ticket=' from POST /api/ws-tickets, or a logged-in session "
    "('?workspace=<slug>' when you belong to several workspaces).",
)


@dataclass(frozen=True)
class SocketAuth:
    """Who opens a socket: its workspace, or why it is refused; and the subprotocol to accept
    with when the credential came in ``Sec-WebSocket-Protocol``."""

    workspace: Workspace | None
    refusal: tuple[str, str] | None = None
    subprotocol: str | None = None


def _offered_credential(scope: dict) -> tuple[str, str] | None:
    """``(marker, value)`` from ``Sec-WebSocket-Protocol: lashops.bearer, <key>`` (or
    ``lashops.ticket, <ticket>``)."""
    offered = [str(p) for p in scope.get("subprotocols") or ()]
    for marker in (BEARER_SUBPROTOCOL, TICKET_SUBPROTOCOL):
        if marker in offered:
            at = offered.index(marker)
            return marker, offered[at + 1] if at + 1 < len(offered) else ""
    return None


@database_sync_to_async
def _resolve_workspace(scope: dict) -> SocketAuth:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    params = query_params(scope)
    offered = _offered_credential(scope)
    marker, value = offered if offered else (None, "")
    key = bearer_token(headers.get("authorization")) or (value if marker == BEARER_SUBPROTOCOL else "")
    ticket = "" if key else (value if marker == TICKET_SUBPROTOCOL else params.get("ticket", ""))
    key = key or ("" if ticket else params.get("token", ""))
    if offered and not value:
        return SocketAuth(None, ("unauthorized", f"'{marker}' must be followed by the credential"), marker)
    if ticket:
        try:
            return SocketAuth(ws_ticket_redeem(plaintext=ticket).workspace, subprotocol=marker)
        except TicketRefused as exc:
            return SocketAuth(None, (exc.code, exc.message), marker)
    if key:
        api_key = api_key_authenticate(plaintext=key)
        if api_key is None:
            return SocketAuth(None, ("invalid_key", "The API key is unknown or revoked."), marker)
        return SocketAuth(api_key.workspace, subprotocol=marker)
    workspace = workspace_for_user(scope.get("user"), params.get("workspace"))
    return SocketAuth(workspace, None if workspace else UNAUTHORIZED)


class WorkspaceAuthMiddleware:
    """Puts ``scope["workspace"]`` from the socket's credential (see the module docstring).
    A refused socket never reaches a consumer where the server can answer the handshake with
    an HTTP response (401 and the reason as JSON); elsewhere the consumer refuses it (403)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        auth = await _resolve_workspace(scope)
        scope["workspace"] = auth.workspace
        if auth.workspace is None and DENIAL_EXTENSION in (scope.get("extensions") or {}):
            await _deny(receive, send, *(auth.refusal or UNAUTHORIZED))
            return None
        if auth.subprotocol:
            send = _accepting_with(send, auth.subprotocol)
        return await self.app(scope, receive, send)


async def _deny(receive: Any, send: Any, code: str, message: str) -> None:
    """Answer the handshake with ``401 {"error": {"code", "message", "details"}}``."""
    if (await receive())["type"] != "websocket.connect":
        return  # the client went away before its handshake reached us
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _accepting_with(send: Any, subprotocol: str) -> Any:
    """A ``send`` that accepts the socket with ``subprotocol``: a client that offered one must
    get one back (browsers drop the socket otherwise), and never the credential itself."""

    async def wrapped(message: dict) -> None:
        if message.get("type") == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return backpressure.wrap_send(wrapped, send)


class ReplayingConsumer(AsyncJsonWebsocketConsumer):
    """Base for every stream. Subclasses say which groups to join (``stream_groups``),
    which durable rows belong to the stream (``stream_filter``) and may authorise the
    subject (``authorize``).

    Live messages reach the socket through the process's fan-out hub (``lashops.core.fanout``:
    one channel-layer subscription per group per process), which puts them on a bounded
    per-socket queue (``LASHOPS_WS_SEND_QUEUE``) drained by a writer task, so a slow socket
    never slows a publisher or the other sockets. When the queue is full the socket is
    *behind*: what is queued and what arrives is dropped, and the client gets ``stream.gap``
    (reason ``slow_consumer``) with ``latest_cursor``; it reloads state and continues from
    there (or fetches the missed range over HTTP from ``requested_cursor``).

    Messages the channel layer lost are recovered from the database: the hub notices a jump in
    a publisher's sequence, a failed read or a membership the layer lost (a Redis restart), joins
    again and calls ``resync``, and the socket catches up on its stream's durable events it has not
    sent. Streams whose cursors are contiguous (``contiguous = True``: the fleet stream holds every
    cursor of the workspace) also heal a hole they see in the cursors themselves."""

    contiguous = False
    # No channel of its own on the layer (an alias that is not configured gives none): live events
    # come through the process's fan-out hub, and a read of a per-socket channel would end the
    # socket (1011) the moment Redis went away.
    channel_layer_alias = "lashops.no-socket-channel"
    # Live events held while connect() replays; past this many it replays again from the database
    # instead. None: LASHOPS_WS_SEND_QUEUE.
    buffer_limit: int | None = None
    workspace: Workspace
    last_sent: int
    buffering: bool
    buffer: list[tuple[dict[str, Any], str]]  # (event, its JSON text)

    # --- subclass hooks ---------------------------------------------------------------

    def stream_groups(self) -> list[str]:
        raise NotImplementedError

    def stream_filter(self) -> dict[str, Any]:
        return {}

    async def authorize(self) -> bool:
        return True

    async def transmit(self, payload: dict[str, Any], text: str | None = None) -> None:
        """Write one message to the socket (the one place sends go through); ``text`` is its
        JSON when already encoded (live events are encoded once per process, not per socket)."""
        if self.gate is not backpressure.OPEN:
            await self.gate.wait()  # daphne never blocks a send: wait while the socket's buffer is full
        # Straight to the server (what AsyncWebsocketConsumer.send does, two frames shorter): this
        # runs once per event per socket.
        await self.base_send({"type": "websocket.send", "text": text if text is not None else json.dumps(payload)})

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
        self.hub = fanout.hub()
        self.queue: asyncio.Queue[tuple[dict[str, Any], str] | None] = asyncio.Queue(
            maxsize=settings.LASHOPS_WS_SEND_QUEUE
        )
        self.writer: asyncio.Task | None = None
        self.gate = backpressure.write_gate(self)
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
            self.joined.append(group)
            await self.hub.subscribe(group, self)
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
        self.sent_live: collections.OrderedDict[int, None] = collections.OrderedDict()
        replayed = 0
        while True:
            replayed += await self._replay()
            # Everything at or below this cursor was in a replay: cursors are allocated under a row
            # lock, so no lower cursor can commit after a higher one became visible. It moves with
            # every pass, or the buffered live copies of what a second pass sent would go out again.
            self.replayed_through = self.last_sent
            # What the replays sent needs no buffered copy (and leaves room for what comes next);
            # live-lane events (no cursor) stay.
            self.buffer = [(e, t) for e, t in self.buffer if e.get("cursor") is None or e["cursor"] > self.last_sent]
            if not self.buffer_overflow:
                break
            # The buffer overflowed (a long replay under a busy stream) or the fan-out asked for a
            # resync (the layer lost a message): what was dropped has committed, replay it again.
            self.buffer_overflow = False
            self.buffer = [item for item in self.buffer if item[0].get("cursor") is not None]
        # Switch to live before any await: what arrives while stream.ready goes out is queued for
        # the writer, not added to a buffer nobody checks again.
        buffered, self.buffer = self.buffer, []
        self.buffering = False
        await self.transmit(
            {"type": "stream.ready", "data": {"after": after, "latest_cursor": self.last_sent, "replayed": replayed}}
        )
        for event, text in buffered:
            await self._forward(event, text)
        self.writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def disconnect(self, code: int) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.cancel()
        for group in getattr(self, "joined", []):
            await self.hub.unsubscribe(group, self)

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
    def _load(self, after: int, limit: int, through: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Rows after ``after`` (up to ``through``), and the prune mark read *after* them: a prune
        deletes and raises the mark in one transaction, so a delete that hid rows from this read
        shows in the mark."""
        rows = events_after(workspace=self.workspace, after=after, through=through, limit=limit, **self.stream_filter())
        events = [envelope(e, self.workspace.slug) for e in rows]
        pruned, _ = stream_bounds(workspace=self.workspace)
        return events, pruned

    @database_sync_to_async
    def _committed_cursor(self) -> int:
        return latest_committed_cursor(workspace=self.workspace)

    # --- called by the fan-out hub (never block) ---------------------------------------

    def deliver(self, event: dict[str, Any], text: str) -> None:
        if self.buffering:
            if len(self.buffer) >= (self.buffer_limit or settings.LASHOPS_WS_SEND_QUEUE):
                self.buffer_overflow = True
                return
            self.buffer.append((event, text))
            return
        self._enqueue((event, text))

    def resync(self, reason: str) -> None:
        if self.buffering:
            self.buffer_overflow = True  # connect() replays from the database again
            return
        self._enqueue(None)  # the writer catches up from the database at this point

    def _enqueue(self, item: tuple[dict[str, Any], str] | None) -> None:
        if self.behind:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.behind = True
            self.dropped += 1

    # --- the writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            if self.behind:
                await self._resync()
            elif item is None:
                await self._catch_up()
            else:
                await self._forward(*item)

    async def _resync(self) -> None:
        """The socket fell too far behind: drop what is queued and tell the client where to resume."""
        dropped = self.dropped + self.queue.qsize() + 1
        while not self.queue.empty():
            self.queue.get_nowait()
        self.dropped = 0
        self.behind = False
        await self._gap("slow_consumer", dropped=dropped)

    async def _gap(self, reason: str, **extra: Any) -> None:
        """Tell the client to reload state and continue from the latest committed cursor."""
        requested = self.last_sent
        latest = max(await self._committed_cursor(), requested)
        self.last_sent = latest
        self.replayed_through = latest  # the client reloads state up to here
        await self.transmit(
            {
                "type": "stream.gap",
                "data": {"requested_cursor": requested, "latest_cursor": latest, "reason": reason, **extra},
            }
        )

    async def _catch_up(self) -> None:
        """Send the stream's durable events the channel layer may have lost: everything after
        ``replayed_through`` that has not gone out live, up to the cursor committed now (every
        lower cursor has committed too, so nothing below it can arrive later)."""
        if self.contiguous:
            await self._replay()
            return
        through = await self._committed_cursor()
        after = self.replayed_through
        batch = settings.LASHOPS_WS_REPLAY_BATCH
        while after < through:
            rows, pruned = await self._load(after, batch, through)
            if pruned > after:
                await self._gap("trimmed")
                return
            for event in rows:
                after = event["cursor"]
                if self._seen(after):
                    continue
                await self.transmit(event)
            if len(rows) < batch:
                break
        self.replayed_through = max(self.replayed_through, through)
        self.last_sent = max(self.last_sent, through)
        # Everything sent so far committed before ``through`` was read: none of it is needed again.
        self.sent_live = collections.OrderedDict((c, None) for c in self.sent_live if c > self.replayed_through)

    def _seen(self, cursor: int) -> bool:
        """Whether a filtered stream already sent ``cursor``; remembers it if not."""
        if cursor <= self.replayed_through or cursor in self.sent_live:
            return True
        self.sent_live[cursor] = None
        if len(self.sent_live) > LIVE_DEDUPE_WINDOW:
            self.sent_live.popitem(last=False)
        return False

    async def _forward(self, event: dict[str, Any], text: str) -> None:
        cursor = event.get("cursor")
        if cursor is None:
            await self.transmit(event, text)  # live lane
            return
        if self.contiguous:
            if cursor > self.last_sent + 1:
                await self._replay()  # heal a hole (a message the layer dropped) from the database
            if cursor <= self.last_sent:
                return  # already replayed
            self.last_sent = cursor
            await self.transmit(event, text)
            return
        # Two publishing processes may deliver cursor N+1 before N: drop only what was replayed
        # or already sent, never a late arrival.
        if self._seen(cursor):
            return
        self.last_sent = max(self.last_sent, cursor)
        await self.transmit(event, text)
        if len(self.sent_live) >= LIVE_DEDUPE_WINDOW:
            # Move ``replayed_through`` up (and forget what is below it) before the window would
            # forget a cursor that a later catch-up from an old ``replayed_through`` could send again.
            await self._catch_up()

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
