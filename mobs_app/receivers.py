"""Receivers of other apps' signals (connected in ``MobsAppConfig.ready``)."""

from __future__ import annotations

import logging
from typing import Any

from mobs_app.continuity import continuity_checkpoint_committed
from mobs_app.messaging import member_reply_record
from mobs_app.models import Continuity
from sessions_app.signals import CommittedTurn

log = logging.getLogger(__name__)


def member_turn_committed(sender: Any, *, turn: CommittedTurn, **kwargs: Any) -> None:
    """``sessions_app.signals.turn_committed``: a member's committed turn is its next checkpoint,
    and its answer goes on its mob's console. Returns at once, with no query, for a session that
    is not a mob member; for a member, one read of its continuity record serves both."""
    if not turn.mob:
        return
    record = Continuity.objects.filter(session_id=turn.session_id).select_related("identity__mob__workspace").first()
    if record is None:
        return  # a session no identity runs (any more)
    # Two independent effects: a failed checkpoint must not cost the console its reply.
    try:
        continuity_checkpoint_committed(session_id=turn.session_id, head_revision=turn.head_revision, record=record)
    except Exception:
        log.exception("checkpoint of member session %s (turn %s) failed", turn.session_id, turn.turn_id)
    # Mob deliveries arrive as queued inputs; the turn that accepted them answers those frames.
    member_reply_record(
        session_id=turn.session_id,
        turn_id=turn.turn_id,
        text=turn.final_text,
        source_keys=[turn.source_key, *turn.accepted_inputs],
        continuity=record,
    )
