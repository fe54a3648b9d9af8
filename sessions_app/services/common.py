"""What the service modules share: holder ids, event subjects, token fields, and the guard
over open turns (a turn moves queued -> running -> committed and never back)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from sessions_app.models import (
    Turn,
)

log = logging.getLogger(__name__)

_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)


def driver_id() -> str:
    """A unique holder id for one drive (host, pid, random), for leases and evidence."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _subject(session_id: str, **extra: Any) -> dict[str, Any]:
    return {"session": session_id, **extra}


# --- open turns --------------------------------------------------------------------------


# A turn moves queued -> running -> committed and never back: every status write below is a
# conditional UPDATE over the turns that are still open (not stamped committed), checked by row count.
_OPEN = (Turn.Status.QUEUED, Turn.Status.RUNNING)


def _open_turns():
    """Turns not committed: open status and no commit stamp (the stamp is the truth)."""
    return Turn.objects.filter(status__in=_OPEN, commit_digest="")


def _settled(turn: Turn) -> Turn:
    """A turn with a commit stamp is committed: if a status write from before the guards moved
    it back to ``running``, put it back (conditionally; the stamp never goes away)."""
    if turn.commit_digest and turn.status != Turn.Status.COMMITTED:
        if Turn.objects.filter(pk=turn.pk).exclude(commit_digest="").update(status=Turn.Status.COMMITTED):
            log.warning("turn %s carried a commit stamp but said %s: settled as committed", turn.pk, turn.status)
        turn.status = Turn.Status.COMMITTED
    return turn
