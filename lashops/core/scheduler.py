"""The in-process scheduler of the embedded default.

Production runs ``CELERY_BEAT_SCHEDULE`` on Celery beat. Without a broker, this daemon thread
runs the very same schedule in-process (sweeps, timers, crons, retention): one schedule, two
drivers. Started when daphne/runserver starts and lazily on the first in-process dispatch;
never with a broker configured (beat owns the schedule then) and never under tests, which call
the sweep services directly (``LASHOPS_SCHEDULER=0``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connections

log = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return bool(settings.LASHOPS_SCHEDULER) and settings.LASHOPS_RUNNER == "in_process"


def ensure_started() -> bool:
    """Start the scheduler thread once per OS process when it is enabled."""
    global _thread
    if not enabled():
        return False
    with _lock:
        if _thread is not None and _thread.is_alive():
            return True
        _thread = threading.Thread(target=_loop, name="lashops-scheduler", daemon=True)
        _thread.start()
    return True


_modules_imported = False


def _entries() -> list[tuple[str, str, float]]:
    schedule: dict[str, dict[str, Any]] = settings.CELERY_BEAT_SCHEDULE
    return [
        (name, entry["task"], float(entry["schedule"]))
        for name, entry in schedule.items()
        if isinstance(entry.get("schedule"), int | float)
    ]


def run_due(next_due: dict[str, float], now: float) -> list[str]:
    """Run every entry whose time has come; returns the names that ran."""
    from lashops import celery_app

    celery_app.set_current()
    ran = []
    for name, task_name, interval in _entries():
        due = next_due.setdefault(name, now + interval)
        if now < due:
            continue
        next_due[name] = now + interval
        _import_task_modules()
        try:
            celery_app.tasks[task_name].run()
            ran.append(name)
        except Exception:
            log.exception("scheduled job %s (%s) failed", name, task_name)
        finally:
            connections.close_all()
    return ran


def _import_task_modules() -> None:
    """Outside a worker nothing has imported the apps' task modules yet (autodiscovery is lazy).
    Once per process: Celery's Django fixup runs the system checks on every call, and the first
    import is a second of CPU that should not land in the middle of serving."""
    global _modules_imported
    if not _modules_imported:
        from lashops import celery_app

        celery_app.loader.import_default_modules()
        _modules_imported = True


def _loop() -> None:
    _import_task_modules()
    next_due: dict[str, float] = {}
    tick = max(0.1, min([interval for _, _, interval in _entries()] or [1.0]))
    while True:
        time.sleep(tick)
        run_due(next_due, time.monotonic())
