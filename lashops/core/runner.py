"""Run background work after commit, with one of two drivers and one code path.

* ``celery`` (``CELERY_BROKER_URL`` set): the task is sent to the broker once the
  transaction commits, and a Celery worker runs it;
* ``in_process`` (embedded default): the same task body runs on a bounded thread pool in
  this process, once the transaction commits.

Tasks take ids, re-check state and are idempotent, so a duplicate delivery is harmless.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Task
from django.conf import settings
from django.db import close_old_connections, connections, transaction

from lashops.core import heartbeat

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def runner_mode() -> str:
    return settings.LASHOPS_RUNNER


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.LASHOPS_RUNNER_THREADS, thread_name_prefix="lashops-runner")
            heartbeat.start(kind="in_process")  # no-op when already beating or switched off
        return _pool


def _run_in_thread(task: Task, kwargs: dict[str, Any]) -> Any:
    from lashops import celery_app

    # Celery's "current app" is thread-local; shared_task proxies resolve through it.
    celery_app.set_current()
    close_old_connections()
    try:
        with heartbeat.track(task.name, **heartbeat.work_ids(kwargs)):
            return task.run(**kwargs)
    except Exception:
        log.exception("in-process task %s failed", task.name)
        raise
    finally:
        connections.close_all()


def run_in_process(task: Task, **kwargs: Any) -> Future:
    """Submit ``task`` to the in-process pool now (no commit hook). Used by the in-process
    scheduler and by tests that drive the runner directly."""
    return _get_pool().submit(_run_in_thread, task, kwargs)


def send(task: Task, kwargs: dict[str, Any], **options: Any) -> bool:
    """Send ``task`` to the broker now. A send that fails (the broker is down) is logged and
    left to the sweeps, which find the committed work and send it again: the write that asked
    for it has succeeded, and must not be reported as an error. Returns whether it was sent."""
    try:
        task.apply_async(kwargs=kwargs, **options)
    except Exception as exc:
        log.warning("could not send %s to the broker (%s); its sweep will send it again", task.name, exc)
        return False
    return True


def dispatch(task: Task, **kwargs: Any) -> None:
    """Run ``task(**kwargs)`` in the background once the current transaction commits. With a
    broker that cannot be reached the work stays committed and its sweep dispatches it later."""
    if runner_mode() == "celery":
        transaction.on_commit(lambda: send(task, kwargs))
    else:
        from lashops.core.scheduler import ensure_started

        ensure_started()  # the sweeps that recover lost in-process work run beside it
        transaction.on_commit(lambda: run_in_process(task, **kwargs))


def shutdown(wait: bool = True) -> None:
    """Stop the in-process pool. The lock is not held while waiting: a running task that dispatches
    follow-up work (a turn's commit starting the next queued turn) needs it, and would deadlock."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=wait)


def drain(timeout: float = 120.0) -> bool:
    """Wait until in-process work, and the work it dispatches in turn, has finished. For short-lived
    processes (management commands) that dispatch background work: at interpreter exit Python marks
    the pool shut down, and a running task could no longer hand on its follow-up. Returns whether it
    drained within ``timeout``."""
    import time

    global _pool
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _pool_lock:
            pool, _pool = _pool, None
        if pool is None:
            return True
        pool.shutdown(wait=True)
    return False
