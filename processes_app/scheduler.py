"""The in-process scheduler of the embedded default: one daemon thread that runs the
process sweep (re-drives, timers, cron schedules, abandon reconciliation) every
``LASHOPS_PROCESS_SWEEP_SECONDS``. Production runs the same sweep from Celery beat.

Started lazily on the first process dispatch, and by ``runserver``/daphne at start-up; never
with a broker configured (beat owns the schedule then) and never under tests, which call
``processes_app.services.process_sweep`` directly.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)

_thread: threading.Thread | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return bool(settings.LASHOPS_PROCESS_SCHEDULER) and settings.LASHOPS_RUNNER == "in_process"


def ensure_started() -> bool:
    """Start the scheduler thread once per OS process when it is enabled."""
    global _thread
    if not enabled():
        return False
    with _lock:
        if _thread is not None and _thread.is_alive():
            return True
        _thread = threading.Thread(target=_loop, name="lashops-process-scheduler", daemon=True)
        _thread.start()
    return True


def _loop() -> None:
    from processes_app.services import process_sweep

    while True:
        time.sleep(float(settings.LASHOPS_PROCESS_SWEEP_SECONDS))
        try:
            process_sweep()
        except Exception:
            log.exception("process sweep failed")
        finally:
            connection.close()
