"""Receivers of other apps' signals (connected in ``MobsAppConfig.ready``)."""

from __future__ import annotations

from typing import Any

from mobs_app.continuity import continuity_checkpoint_committed


def record_member_checkpoint(sender: Any, *, session_id: str, head_revision: int, **kwargs: Any) -> None:
    """``sessions_app.signals.turn_committed``: a member's committed turn is its next checkpoint."""
    continuity_checkpoint_committed(session_id=session_id, head_revision=head_revision)


def record_member_reply(sender: Any, *, session_id: str, turn_id: str, **kwargs: Any) -> None:
    """``sessions_app.signals.turn_committed``: a member's answer goes on its mob's console."""
    from mobs_app.messaging import member_reply_record
    from mobs_app.models import Continuity
    from sessions_app.models import PendingInput, Turn

    if not Continuity.objects.filter(session_id=session_id).exists():
        return  # not a mob member's session: no need to read the turn
    turn = Turn.objects.filter(session_id=session_id, pk=turn_id).values("final_text", "source_key").first()
    if turn is None:
        return
    # Mob deliveries arrive as queued inputs; the turn that accepted them answers those frames.
    keys = list(
        PendingInput.objects.filter(session_id=session_id, accepted_by=turn_id).values_list("source_key", flat=True)
    )
    member_reply_record(
        session_id=session_id, turn_id=turn_id, text=turn["final_text"], source_keys=[turn["source_key"], *keys]
    )
