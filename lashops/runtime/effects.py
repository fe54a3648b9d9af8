"""Journaled effects: look up first, run and record only when nothing is recorded.

A crash between running an effect and recording it re-runs that one effect on re-drive
(at-least-once); everything recorded is returned as recorded, never re-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lashops.runtime.interfaces import EffectJournal, JournalError

# Granularity of cancellation checks while sleeping.
SLEEP_POLL_SECONDS = 0.02


def journal_lookup(journal: EffectJournal, key: str) -> dict[str, Any] | None:
    try:
        return journal.lookup(key)
    except Exception as exc:
        raise JournalError(f"journal lookup failed for {key}: {exc}") from exc


def journal_record(journal: EffectJournal, key: str, *, kind: str, outcome: dict[str, Any]) -> dict[str, Any]:
    try:
        return journal.record(key, kind=kind, outcome=outcome)
    except Exception as exc:
        raise JournalError(f"journal record failed for {key}: {exc}") from exc


def run_effect(
    journal: EffectJournal, key: str, *, kind: str, run: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """The outcome of the effect at ``key`` and whether it was replayed from the journal."""
    recorded = journal_lookup(journal, key)
    if recorded is not None:
        return recorded, True
    return journal_record(journal, key, kind=kind, outcome=run()), False


def durable_sleep(
    journal: EffectJournal,
    key: str,
    seconds: float,
    *,
    is_cancelled: Callable[[], bool] = lambda: False,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Sleep until a journaled wall-clock deadline; ``False`` when cancelled first.

    The deadline is recorded before sleeping, so a re-drive after a crash sleeps only the
    time that remains (or not at all when the deadline has passed).
    """
    outcome, _ = run_effect(journal, key, kind="sleep", run=lambda: {"deadline": now() + max(0.0, float(seconds))})
    deadline = float(outcome["deadline"])
    while True:
        if is_cancelled():
            return False
        remaining = deadline - now()
        if remaining <= 0:
            return True
        sleep(min(remaining, SLEEP_POLL_SECONDS))
