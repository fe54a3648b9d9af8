"""Signals other apps may observe. sessions_app sends them and imports none of the receivers."""

from __future__ import annotations

from dataclasses import dataclass

from django.dispatch import Signal


@dataclass(frozen=True)
class CommittedTurn:
    """What a committed turn hands its observers: what ``turn_commit`` already held, so a
    receiver needs no read of the turn, its inputs or the session."""

    session_id: str
    turn_id: str
    head_revision: int  # the session's revision after this turn
    final_text: str  # as stamped on the turn ("" for a stopped or cancelled turn)
    source_key: str  # the turn's own idempotency key ("" for most turns)
    # The source keys of the queued inputs this turn accepted; read only for a mob member's
    # turn (``mob`` set), empty otherwise.
    accepted_inputs: tuple[str, ...]
    # The mob this session is a member of: ``metadata["mob"]``, which mobs_app writes when it
    # opens a member session (mobs_app.members); "" for every other session.
    mob: str


def member_mob(metadata: object) -> str:
    """The mob named by a session's metadata ("" for a session that is not a mob member)."""
    mob = metadata.get("mob") if isinstance(metadata, dict) else None
    return str(mob) if mob else ""


# Sent once a turn's commit is durable (from ``transaction.on_commit``), with one keyword
# argument ``turn`` (a ``CommittedTurn``). A receiver's exception is logged and never reaches
# the committing turn.
turn_committed = Signal()
