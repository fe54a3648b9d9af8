"""Receivers of other apps' signals (connected in ``MobsAppConfig.ready``)."""

from __future__ import annotations

from typing import Any

from mobs_app.continuity import continuity_checkpoint_committed


def record_member_checkpoint(sender: Any, *, session_id: str, head_revision: int, **kwargs: Any) -> None:
    """``sessions_app.signals.turn_committed``: a member's committed turn is its next checkpoint."""
    continuity_checkpoint_committed(session_id=session_id, head_revision=head_revision)
