"""Session tasks. Thin: they call services; idempotent by design (a committed turn is skipped)."""

from __future__ import annotations

import logging

from lashops.celery import task
from sessions_app.errors import SessionBusy

log = logging.getLogger(__name__)


@task(name="lashops.sessions.turn_drive", formerly="lashops.sessions.drive_turn")
def drive_turn_task(*, turn_id: str) -> None:
    from sessions_app.services import turn_drive

    try:
        turn_drive(turn_id=turn_id)
    except SessionBusy as exc:
        # Someone else holds the session; the sweeper re-dispatches if they vanish.
        log.info("turn %s not driven here: %s", turn_id, exc.message)


@task(name="lashops.sessions.turns_sweep")
def turns_sweep_task() -> list[str]:
    from sessions_app.services import turns_sweep

    return turns_sweep()
