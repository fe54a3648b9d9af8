"""Hand channel-layer sends to the right event loop.

Channels' in-memory layer belongs to the server's event loop: a send made from a runner
thread on a fresh loop may never wake a socket waiting on the server loop. The ASGI
application records its loop here (``bind_loop``); sync code on any other thread then
schedules the send on that loop without waiting for it, so publishers never block on
slow consumers. With no server loop in this process (a Celery worker), the send runs on
a private loop, which is right for the Redis layer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    with _lock:
        _server_loop = loop


def _on_sent(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("live send failed: %s", exc)


def group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _server_loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        # Called from async code on a loop: schedule, don't block it.
        running.create_task(layer.group_send(group, message))
        return
    if loop is not None and loop.is_running() and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).add_done_callback(_on_sent)
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # the durable lane already holds the event; a lost live send is recoverable
        log.warning("live send to %s failed: %s", group, exc)
