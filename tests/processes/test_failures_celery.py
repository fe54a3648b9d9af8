"""Failure tests with real Celery worker processes on Redis and real PostgreSQL."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone

from lashops.core.models import Lease
from processes_app.models import Process
from processes_app.services import process_redrive, process_signal, process_start, process_sweep
from tests.support.polling import wait_until
from tests.workers import WorkerProcess, celery_app_on

pytestmark = [pytest.mark.postgres, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "LASHOPS_PROCESS_DEFINITIONS": "tests.processes.definitions",
    "LASHOPS_PROCESS_LEASE_SECONDS": "2",
    "LASHOPS_SCHEDULER": "0",
}


@pytest.fixture
def celery_runner(settings, broker_url):
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_PROCESS_LEASE_SECONDS = 2
    settings.LASHOPS_PROCESS_REDISPATCH_SECONDS = 0
    with celery_app_on(broker_url) as app:
        yield app


def _worker(app, broker_url, tmp_path: Path, name: str) -> WorkerProcess:
    worker = WorkerProcess(broker_url, concurrency=1, log_path=tmp_path / f"{name}.log", extra_env=WORKER_ENV)
    try:
        worker.wait_ready(app)
    except BaseException:
        worker.stop()  # a worker that never answered must not outlive the test and steal its tasks
        raise
    return worker


def _wait(predicate, timeout: float = 30, *, sweep: bool = False, what: str = "") -> None:
    """wait_until, sweeping after each miss when ``sweep`` (as beat would)."""

    def check() -> bool:
        if predicate():
            return True
        if sweep:
            process_sweep()
        return False

    wait_until(check, timeout, interval=0.2, message=f"timed out waiting for {what or predicate}")


def _status(pid: str) -> str:
    return Process.objects.values_list("status", flat=True).get(pk=pid)


def _lines(path: Path) -> list[str]:
    return [" ".join(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []


def test_killed_worker_between_steps_is_finished_by_another_without_repeating_steps(
    workspace, broker_url, celery_runner, tmp_path
):
    log, gate = tmp_path / "steps.log", tmp_path / "gate"
    first = _worker(celery_runner, broker_url, tmp_path, "a")
    second = None
    try:
        proc, _ = process_start(
            workspace=workspace,
            process_id="killme",
            definition="test.counted",
            input={"log": str(log), "gate": str(gate)},
            disposition="rerunnable",
        )
        _wait(lambda: _lines(log) == ["killme first"], what="the first step")
        lease = Lease.objects.get(scope="process", key="killme")
        assert lease.holder and lease.expires_at > timezone.now()  # live, held by the worker's pool child
        first.kill(signal.SIGKILL)
        assert first.proc.poll() is not None  # really dead
        _wait(lambda: Lease.objects.get(scope="process", key="killme").expires_at < timezone.now(), what="expiry")
        assert _status("killme") == "running"
        gate.touch()
        second = _worker(celery_runner, broker_url, tmp_path, "b")
        _wait(lambda: _status("killme") == "completed", sweep=True, what="completion by the second worker")
    finally:
        first.stop()
        if second:
            second.stop()
    assert Counter(_lines(log)) == {"killme first": 1, "killme second": 1, "killme third": 1}
    proc.refresh_from_db()
    assert proc.output == {"lines": [1, 2, 3]}
    assert proc.run_count == 2


def test_two_workers_racing_run_each_step_exactly_once(workspace, broker_url, celery_runner, tmp_path):
    log = tmp_path / "steps.log"
    workers = [_worker(celery_runner, broker_url, tmp_path, n) for n in ("a", "b")]
    try:
        ids = [f"race-{i}" for i in range(6)]
        for pid in ids:
            process_start(
                workspace=workspace,
                process_id=pid,
                definition="test.counted",
                input={"log": str(log), "pause": 0.2},
                disposition="rerunnable",
            )
            process_redrive(workspace=workspace, process_id=pid)  # a duplicate wake-up for each
        _wait(lambda: all(_status(p) == "completed" for p in ids), timeout=60, what="all six")
    finally:
        for worker in workers:
            worker.stop()
    counts = Counter(_lines(log))
    assert len(counts) == 18 and set(counts.values()) == {1}, counts


def test_a_purged_broker_queue_does_not_strand_a_process(workspace, broker_url, celery_runner, tmp_path):
    import redis

    process_start(workspace=workspace, process_id="purged", definition="test.one_step", disposition="rerunnable")
    client = redis.Redis.from_url(broker_url)
    assert client.llen("lashops") == 1
    client.delete("lashops")  # the dispatch is lost
    worker = _worker(celery_runner, broker_url, tmp_path, "a")
    try:
        time.sleep(1)
        assert _status("purged") == "running"  # nothing arrived
        _wait(lambda: _status("purged") == "completed", sweep=True, what="the sweep to re-drive it")
    finally:
        worker.stop()


def test_a_sleeping_process_wakes_after_every_worker_restarted(workspace, broker_url, celery_runner, tmp_path):
    first = _worker(celery_runner, broker_url, tmp_path, "a")
    second = None
    try:
        process_start(
            workspace=workspace,
            process_id="sleepy",
            definition="test.sleeper",
            input={"seconds": 2},
            disposition="rerunnable",
        )
        _wait(lambda: Process.objects.get(pk="sleepy").wait_kind == "timer", what="the process to park")
        first.kill(signal.SIGKILL)
        assert first.proc.poll() is not None
        second = _worker(celery_runner, broker_url, tmp_path, "b")
        _wait(lambda: _status("sleepy") == "completed", sweep=True, what="the timer to fire")
    finally:
        first.stop()
        if second:
            second.stop()
    proc = Process.objects.get(pk="sleepy")
    assert proc.output == {"before": "slept", "after": "woke"}
    assert (proc.finished_at - proc.first_started_at).total_seconds() >= 2


def test_a_signal_sent_before_the_process_waits_is_delivered(workspace, broker_url, celery_runner, tmp_path):
    gate = tmp_path / "gate"
    worker = _worker(celery_runner, broker_url, tmp_path, "a")
    try:
        process_start(
            workspace=workspace,
            process_id="early",
            definition="test.signals",
            input={"gate": str(gate)},
            disposition="rerunnable",
        )
        _wait(lambda: Process.objects.get(pk="early").first_started_at is not None, what="the start")
        process_signal(workspace=workspace, process_id="early", name="go", payload={"n": 9})
        gate.touch()
        _wait(lambda: _status("early") == "completed", what="completion")
    finally:
        worker.stop()
    assert Process.objects.get(pk="early").output == {"got": [{"n": 9}]}


def test_concurrent_terminal_writes_never_escape_the_change_feed(workspace):
    """Readers that page through the feed by cursor see every terminal transition, even when
    many commit concurrently (cursor allocation is serialised under the stream-head lock)."""
    from django.db import connection

    from lashops.core.selectors import events_after
    from processes_app.services import process_cancel

    ids = [f"feed-{i}" for i in range(24)]
    for pid in ids:
        process_start(
            workspace=workspace,
            process_id=pid,
            definition="test.sleeper",
            disposition="externally_owned",
            kind="external",
        )
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        cursor = 0
        try:
            while True:
                finished = done.is_set()
                rows = list(events_after(workspace=workspace, after=cursor, limit=1000, process_only=True))
                for row in rows:
                    assert row.cursor > cursor
                    cursor = row.cursor
                    if row.type == "process.cancelled":
                        seen.append(row.process_id)
                if finished and not rows:
                    return
        finally:
            connection.close()

    def writer(chunk: list[str]) -> None:
        try:
            for pid in chunk:
                process_cancel(workspace=workspace, process_id=pid)
        finally:
            connection.close()

    read = threading.Thread(target=reader)
    read.start()
    writers = [threading.Thread(target=writer, args=(ids[i::4],)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    read.join(timeout=30)
    assert sorted(seen) == sorted(ids)
