"""Dispatch: wake a driver after commit (the wake-ups of one transaction coalesced into one
drive per claim batch), or later for a timer."""

from __future__ import annotations

import threading

from django.conf import settings
from django.db import transaction

from lashops.core import txn

# The process ids whose wake-up this connection's transaction asked for; its commit hook sends them.
_drive_ids: txn.ConnectionState[list[str]] = txn.ConnectionState()


def dispatch_drive(process_ids: list[str]) -> None:
    """Wake a driver for these processes once the current transaction commits.

    Wake-ups asked for in one transaction are coalesced: one drive per claim batch of ids
    (a transaction that starts 2,000 processes sends 125 tasks, not 2,000). Every call
    registers a commit hook that sends whatever has accumulated on this connection, so a
    rolled-back savepoint loses no wake-up of the rest; an id from a rolled-back block may
    be sent anyway, which is harmless (a drive re-checks state)."""
    _drive_ids.setdefault(list).extend(process_ids)
    transaction.on_commit(_send_drives)


def _send_drives() -> None:
    from lashops.core.runner import dispatch
    from processes_app.tasks import process_drive_task

    ids = list(dict.fromkeys(_drive_ids.pop() or []))
    if not ids:
        return
    ensure_scheduler()
    size = int(settings.LASHOPS_PROCESS_CLAIM_BATCH)
    for start in range(0, len(ids), size):
        dispatch(process_drive_task, process_ids=ids[start : start + size])


def dispatch_drive_later(process_ids: list[str], delay: float) -> None:
    """A fast-path wake-up for a timer. The sweep is what makes timers durable."""
    from lashops.core.runner import run_in_process, runner_mode, send
    from processes_app.tasks import process_drive_task

    kwargs = {"process_ids": list(process_ids)}
    if runner_mode() == "celery":
        transaction.on_commit(lambda: send(process_drive_task, kwargs, countdown=delay))
    else:

        def later() -> None:
            timer = threading.Timer(delay + 0.01, lambda: run_in_process(process_drive_task, **kwargs))
            timer.daemon = True
            timer.start()

        transaction.on_commit(later)


def ensure_scheduler() -> None:
    from processes_app.scheduler import ensure_started

    ensure_started()
