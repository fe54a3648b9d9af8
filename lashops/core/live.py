"""Hand channel-layer sends to the right event loop, in order, without blocking publishers.

Channels' in-memory layer belongs to the server's event loop: a send made from a runner thread
on a fresh loop may never wake a socket waiting on the server loop. The ASGI application records
its loop here (``bind_loop``). Processes without a server loop (Celery workers, management
commands) get one private loop on a daemon thread, so channels-redis keeps its connections
instead of opening a new pool per send.

Every send goes through one FIFO queue per loop, drained by a single task: messages leave in the
order they were published (independent tasks could overtake each other on a slow network), and
publishers only enqueue, so a slow layer never stalls them. The drain stamps each message with its
``origin`` and a per-group ``seq`` so a receiving server (``lashops.core.fanout``) can tell when the
layer lost one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import uuid
import weakref
from typing import Any

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_private_loop: asyncio.AbstractEventLoop | None = None
_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    with _lock:
        _server_loop = loop


def _own_loop() -> asyncio.AbstractEventLoop:
    global _private_loop
    with _lock:
        if _private_loop is None or _private_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="lashops-live-sender", daemon=True).start()
            _private_loop = loop
        return _private_loop


SEQUENCES_REMEMBERED = 10_000  # groups whose count a sender keeps; a forgotten group restarts at 1


async def _drain(queue: asyncio.Queue) -> None:
    origin = uuid.uuid4().hex[:16]
    seqs: collections.OrderedDict[str, int] = collections.OrderedDict()
    while True:
        group, message = await queue.get()
        seq = seqs.pop(group, 0) + 1
        seqs[group] = seq
        if len(seqs) > SEQUENCES_REMEMBERED:
            seqs.popitem(last=False)
        layer = get_channel_layer()
        try:
            await layer.group_send(group, {**message, "origin": origin, "seq": seq})
        except Exception as exc:  # the durable lane holds the event; a lost live send is recoverable
            log.warning("live send to %s failed: %s", group, exc)
        finally:
            queue.task_done()


def _enqueue(loop: asyncio.AbstractEventLoop, item: tuple[str, dict[str, Any]]) -> None:
    """Runs on ``loop``: put the item on that loop's queue, starting its drain task once."""
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = asyncio.Queue()
        loop.create_task(_drain(queue))
    queue.put_nowait(item)


def group_send(group: str, message: dict[str, Any]) -> None:
    """Queue a live send; never raises. It runs in on_commit callbacks of requests and tasks whose
    work has committed: a channel layer that is down (or a server loop that just closed) must not
    turn that success into an error. The durable lane holds every durable event, and the receiving
    servers catch up from it (``lashops.core.fanout``)."""
    try:
        if get_channel_layer() is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            _enqueue(running, (group, message))
            return
        loop = _server_loop
        if loop is None or not loop.is_running() or loop.is_closed():
            loop = _own_loop()
        loop.call_soon_threadsafe(_enqueue, loop, (group, message))
    except Exception:
        log.exception("live send to %s was not queued", group)


def flush(timeout: float = 5.0) -> None:
    """Wait until this process's private sender has sent everything queued (for tests, shutdown)."""
    loop = _private_loop
    if loop is None or not loop.is_running():
        return

    async def _wait() -> None:
        # Looked up on the loop, after the hand-overs made before this call (callbacks run in
        # order): read from this thread, a send just handed over may not have made the queue yet.
        queue = _queues.get(loop)
        if queue is not None:
            await queue.join()  # queued *and* in flight: an empty queue may still have a send under way

    asyncio.run_coroutine_threadsafe(_wait(), loop).result(timeout)
