"""Signals other apps may observe. sessions_app sends them and imports none of the receivers."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a turn's commit is durable (from ``transaction.on_commit``), with keyword arguments
# ``session_id``, ``turn_id`` and ``head_revision`` (the session's revision after this turn).
# A receiver's exception is logged and never reaches the committing turn.
turn_committed = Signal()
