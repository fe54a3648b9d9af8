"""Runner heartbeats: every process that runs background work (a Celery pool process, or an
ASGI server's in-process driver) writes a ``WorkerHeartbeat`` row every
``LASHOPS_WORKER_BEAT_SECONDS`` from a daemon thread, listing the work it is running now.

Work is tracked with ``track(...)`` around each task body (the in-process runner does it; Celery
tasks are tracked by the ``task_prerun``/``task_postrun`` signals in ``worker_signals``). Each
beat also goes out live to the ``core.workers`` group, which every fleet socket joins.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from lashops.core import live

log = logging.getLogger(__name__)

WORKERS_GROUP = "core.workers"

_lock = threading.Lock()
_in_flight: dict[int, dict[str, Any]] = {}
_ids = itertools.count(1)
_completed = 0
_beater: Beater | None = None


@contextmanager
def track(name: str, **ids: Any) -> Iterator[None]:
    """Mark one item of work as in flight in this process for the duration."""
    token = begin(name, **ids)
    try:
        yield
    finally:
        end(token)


def work_ids(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ids a task's keyword arguments name (``turn_id``, ``process_id``, ``mob_pk``,
    ``workspace_id``...): what a beat lists for the item, and what ``lashops.core.tenancy`` maps to
    the item's workspace, so a workspace is shown its own work in flight and nobody else's."""
    return {
        k: v
        for k, v in kwargs.items()
        if (k.endswith(("_id", "_pk")) or k == "identity") and isinstance(v, str | int) and not isinstance(v, bool)
    }


def begin(name: str, **ids: Any) -> int:
    token = next(_ids)
    with _lock:
        _in_flight[token] = {"task": name, "since": timezone.now().isoformat(), **_plain(ids)}
    return token


def end(token: int) -> None:
    global _completed
    with _lock:
        if _in_flight.pop(token, None) is not None:
            _completed += 1


def _plain(ids: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int | float | bool) else str(v)[:200] for k, v in ids.items()}


def snapshot() -> tuple[list[dict[str, Any]], int]:
    with _lock:
        return list(_in_flight.values()), _completed


class Beater(threading.Thread):
    """Daemon thread that beats until stopped; the last act of ``stop`` marks the row stopped."""

    def __init__(self, *, worker_id: str, kind: str, queues: list[str]) -> None:
        super().__init__(name="lashops-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.kind = kind
        self.queues = queues
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at: datetime = timezone.now()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        from lashops.core.services import worker_beat

        in_flight, completed = snapshot()
        try:
            worker_beat(
                worker_id=self.worker_id,
                kind=self.kind,
                host=self.host,
                pid=self.pid,
                holder_prefix=f"{self.host}:{self.pid}:",
                queues=self.queues,
                started_at=self.started_at,
                in_flight=in_flight,
                completed=completed,
            )
        except Exception as exc:  # a missed beat is what staleness detection is for
            log.warning("heartbeat of %s failed: %s", self.worker_id, exc)
            return
        finally:
            if threading.current_thread() is self:
                connection.close()  # the beat thread keeps no connection open between beats
        live.group_send(
            WORKERS_GROUP,
            {
                "type": "stream.event",
                "event": {
                    "cursor": None,
                    "live": True,
                    "type": "worker.heartbeat",
                    "ts": timezone.now().isoformat(),
                    "workspace": None,
                    "subject": {"worker": self.worker_id},
                    "data": {
                        "worker_id": self.worker_id,
                        "kind": self.kind,
                        "host": self.host,
                        "pid": self.pid,
                        # No work in flight here: every workspace's fleet socket gets this beat, and
                        # a workspace sees only its own items (GET /api/workers, /ops/fleet.json).
                        "completed": completed,
                    },
                },
            },
        )

    def run(self) -> None:
        from django.apps import apps

        while not apps.ready and not self._stop_event.is_set():
            self._stop_event.wait(0.05)  # started from AppConfig.ready(): let Django finish loading first
        while not self._stop_event.is_set():
            self.beat()
            self._stop_event.wait(settings.LASHOPS_WORKER_BEAT_SECONDS)

    def stop(self) -> None:
        from lashops.core.services import worker_stop

        self._stop_event.set()
        try:
            worker_stop(worker_id=self.worker_id)
        except Exception as exc:
            log.warning("could not mark %s stopped: %s", self.worker_id, exc)


def start(*, kind: str, worker_id: str | None = None, queues: list[str] | None = None) -> Beater | None:
    """Start this process's heartbeat (once; idempotent). Off when ``LASHOPS_WORKER_HEARTBEAT`` is."""
    global _beater
    if not settings.LASHOPS_WORKER_HEARTBEAT:
        return None
    with _lock:
        if _beater is not None and _beater.is_alive() and _beater.pid == os.getpid():
            return _beater
        wid = worker_id or f"{kind}:{socket.gethostname()}:{os.getpid()}"
        _beater = Beater(worker_id=wid, kind=kind, queues=queues or [])
        _beater.start()
        return _beater


def stop() -> None:
    global _beater
    with _lock:
        beater, _beater = _beater, None
    if beater is not None and beater.pid == os.getpid():
        beater.stop()
