"""Runner heartbeats: every process that runs background work (a Celery pool process, or an
ASGI server's in-process driver) writes a ``WorkerHeartbeat`` row every
``LASHOPS_WORKER_BEAT_SECONDS`` from a daemon thread, listing the work it is running now.

Work is tracked with ``track(...)`` around each task body (the in-process runner does it; Celery
tasks are tracked by the ``task_prerun``/``task_postrun`` signals in ``worker_signals``). Each
beat also goes out live to the ``core.workers`` group, which every fleet socket joins.

A process that exits cleanly marks its row stopped (``stop``: at interpreter exit, and from
Celery's shutdown signals), so short-lived processes that ran work (a management command, a
server restart) do not linger as stale. One that died without a word is recognised on its own
host at once: ``pid_gone`` (the sweep marks it dead; the reads show it dead before that).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from lashops.core import event_types, live

log = logging.getLogger(__name__)

WORKERS_GROUP = "core.workers"
HOST = socket.gethostname()
# A pid whose process started this long after the row's process began is a reuse of the pid.
PID_REUSE_SLACK_SECONDS = 2.0

_lock = threading.Lock()
_in_flight: dict[int, dict[str, Any]] = {}
_ids = itertools.count(1)
_completed = 0
_beater: Beater | None = None
_atexit_registered = False


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
                    "type": event_types.WORKER_HEARTBEAT,
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
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)  # a beat in progress would write the row back as running
        try:
            worker_stop(worker_id=self.worker_id)
        except Exception as exc:
            log.warning("could not mark %s stopped: %s", self.worker_id, exc)


def start(*, kind: str, worker_id: str | None = None, queues: list[str] | None = None) -> Beater | None:
    """Start this process's heartbeat (once; idempotent). Off when ``LASHOPS_WORKER_HEARTBEAT`` is.
    The row is marked stopped when the interpreter exits cleanly."""
    global _beater, _atexit_registered
    if not settings.LASHOPS_WORKER_HEARTBEAT:
        return None
    with _lock:
        if _beater is not None and _beater.is_alive() and _beater.pid == os.getpid():
            return _beater
        wid = worker_id or f"{kind}:{socket.gethostname()}:{os.getpid()}"
        _beater = Beater(worker_id=wid, kind=kind, queues=queues or [])
        _beater.start()
        if not _atexit_registered:
            # Runs after the interpreter joined its non-daemon threads (the in-process runner's
            # pool among them), so the work this process ran has finished or failed by then.
            atexit.register(stop)
            _atexit_registered = True
        return _beater


def stop() -> None:
    global _beater
    with _lock:
        beater, _beater = _beater, None
    if beater is not None and beater.pid == os.getpid():
        beater.stop()


def pid_gone(pid: int, *, started_before: datetime | None = None) -> bool:
    """True when no live process ``pid`` runs on this host: none at all, a zombie (killed, not yet
    reaped), or, given ``started_before`` (when the process we mean was already running), a later
    process that reuses the pid. False when in doubt."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists (another user's process)
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start_ticks = stat
    if state == "Z":
        return True
    if started_before is not None and start_ticks is not None:
        started = _boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")
        return started > started_before.timestamp() + PID_REUSE_SLACK_SECONDS
    return False


def worker_gone(*, host: str, pid: int, started_at: datetime | None = None) -> bool:
    """A worker row whose process is provably gone: it ran on this host and ``pid_gone`` says so.
    Rows of other hosts are never judged here (their pids mean nothing on this one)."""
    return host == HOST and pid_gone(pid, started_before=started_at)


def holder_gone(holder: str) -> bool:
    """A lease holder id ``host:pid:...`` whose process is provably gone from this host. Holders
    of other hosts, or ids of another shape (``LASHOPS_MOB_RUNTIME_ID``), are never judged gone:
    their leases are left to expire."""
    parts = holder.split(":")
    if len(parts) < 3 or parts[0] != HOST or not parts[1].isdigit():
        return False
    return pid_gone(int(parts[1]))


def _proc_stat(pid: int) -> tuple[str, int | None] | None:
    """(state, start time in clock ticks since boot) from ``/proc`` (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return (fields[0] if fields else "?"), None


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0
