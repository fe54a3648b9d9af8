"""The small interfaces a host implements to drive the engine.

The engine never stores anything itself. It asks an :class:`EffectJournal` before every
nondeterministic operation, reports progress to :class:`TurnEvents`, polls
:class:`TurnControl` for cancellation, lease loss and queued input, and writes
diagnostics to a :class:`TraceSink`. In-memory implementations live in
:mod:`lashops.runtime.memory`; the Django side implements them with the ORM.
"""

from __future__ import annotations

from typing import Any, Protocol


class LeaseLost(Exception):
    """The host lost the session lease: the turn must stop before its final commit.

    :func:`lashops.runtime.turn.run_turn` lets this propagate; the host must not commit
    the turn. Effects already journaled stay and are replayed by the next lease holder.
    """


class JournalError(Exception):
    """The journal itself failed (database down, ...). Propagates out of ``run_turn``
    instead of becoming a committed ``runtime_error`` stop; the host retries the turn."""


def replay_key(session_id: str, turn_id: str, iteration: int | str, kind: str, effect_id: str) -> str:
    """The deterministic replay key of one effect of a turn.

    ``iteration`` is the protocol step index; ``kind`` is ``llm_call``, ``tool_attempt``,
    ``sleep``, ``inputs``, ...; ``effect_id`` is ``attempt-{n}`` for model calls and the
    tool call id for tool attempts.
    """
    return f"turn:{session_id}:{turn_id}/{iteration}/{kind}/{effect_id}"


class EffectJournal(Protocol):
    """Recorded outcomes of effects, keyed by replay key. Outcomes are JSON-able dicts.

    Must be safe to call from several threads when tools run concurrently (tool handlers
    record their own sub-effects, e.g. ``clock``, ``sleep``, from worker threads).
    """

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The recorded outcome for ``key``, or ``None`` when the effect never completed."""
        ...

    def record(self, key: str, *, kind: str, outcome: dict[str, Any]) -> dict[str, Any]:
        """Record ``outcome`` for ``key``. First writer wins: when ``key`` is already
        recorded, keep the existing outcome and return it (callers use the return value)."""
        ...


class TurnEvents(Protocol):
    """Where the engine reports progress. ``durable=True`` events belong on the durable lane
    (the host should buffer them and write them with the turn commit, because a re-driven
    turn emits them again, identically); ``durable=False`` events are live only."""

    def emit(self, type: str, data: dict[str, Any], *, durable: bool) -> None: ...


class TurnControl(Protocol):
    """Host-side control of a running turn. Polled at step boundaries, while streaming,
    between tools and during sleeps."""

    def is_cancelled(self) -> bool: ...

    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` when this worker no longer holds the session lease."""
        ...

    def take_boundary_inputs(self) -> list[str]:
        """User input queued while the turn runs, handed over at a step boundary and from
        then on owned by this turn. The engine journals what it took (``inputs`` effect),
        so a re-driven turn does not call this again for a boundary it already passed."""
        ...


class TraceSink(Protocol):
    """Diagnostics. Events are JSON-able dicts with a ``type`` key. Never given API keys."""

    def trace(self, event: dict[str, Any]) -> None: ...
