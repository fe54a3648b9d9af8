"""The ASGI lifespan of a server process (uvicorn speaks it; daphne does not, and exits through the
interpreter's exit handlers instead).

On shutdown the process's worker row is marked stopped. uvicorn ends a server it was asked to stop
(SIGTERM, SIGINT) by raising the signal again once it has shut down, so the interpreter's exit
handlers never run there: the lifespan's shutdown is the last word such a process gets. Without it,
every restart left a worker shown stale, then for a day."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.db import connections

log = logging.getLogger(__name__)


def _stopped() -> None:
    from lashops.core import heartbeat

    try:
        heartbeat.stop()
    finally:
        connections.close_all()


async def lifespan_app(scope: dict, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await asyncio.to_thread(_stopped)  # the ORM, off the event loop
            except Exception:
                log.exception("marking this server's worker stopped failed")
            await send({"type": "lifespan.shutdown.complete"})
            return
