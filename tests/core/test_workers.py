"""Worker heartbeats: beats upsert one row per runner process; a worker that stops beating is
stale and the leases its processes still hold are reported at risk."""

from datetime import timedelta

import pytest
from django.utils import timezone

from lashops.core import heartbeat
from lashops.core.models import Lease, WorkerHeartbeat
from lashops.core.selectors import worker_report
from lashops.core.services import workers_prune
from tests.support.polling import wait_until


def _beater(settings, worker_id: str = "w1") -> heartbeat.Beater:
    settings.LASHOPS_WORKER_HEARTBEAT = True
    return heartbeat.Beater(worker_id=worker_id, kind="celery", queues=["lashops"])


def test_a_beat_records_host_pid_queues_and_work_in_flight(db, settings):
    beater = _beater(settings)
    with heartbeat.track("lashops.sessions.turn_drive", turn_id="t1"):
        beater.beat()
    row = WorkerHeartbeat.objects.get(worker_id="w1")
    assert (row.pid, row.queues, row.in_flight_count) == (beater.pid, ["lashops"], 1)
    assert row.in_flight[0]["task"] == "lashops.sessions.turn_drive" and row.in_flight[0]["turn_id"] == "t1"
    beater.beat()
    row.refresh_from_db()
    assert row.in_flight_count == 0 and row.completed >= 1
    assert worker_report(workspace=None)[0]["health"] == "healthy"


def test_a_worker_that_stops_beating_is_stale_and_its_leases_are_at_risk(db, settings):
    settings.LASHOPS_WORKER_STALE_SECONDS = 30
    beater = _beater(settings)
    beater.beat()
    WorkerHeartbeat.objects.filter(worker_id="w1").update(last_beat_at=timezone.now() - timedelta(seconds=31))
    Lease.objects.create(
        scope="process",
        key="p1",
        holder=f"{beater.host}:{beater.pid}:abc",
        token=3,
        expires_at=timezone.now() + timedelta(seconds=20),
    )
    Lease.objects.create(scope="process", key="p2", holder="elsewhere:1:x", token=1, expires_at=timezone.now())
    [worker] = worker_report(workspace=None)
    assert worker["health"] == "stale"
    assert [(r["scope"], r["key"]) for r in worker["at_risk"]] == [("process", "p1")]


def test_a_clean_stop_is_not_stale(db, settings):
    beater = _beater(settings)
    beater.beat()
    beater.stop()
    assert worker_report(workspace=None) == []  # a stopped worker leaves the default view
    assert worker_report(workspace=None, include_all=True)[0]["health"] == "stopped"


def test_long_silent_workers_are_forgotten(db, settings):
    _beater(settings).beat()
    WorkerHeartbeat.objects.update(last_beat_at=timezone.now() - timedelta(hours=25))
    assert workers_prune(older_than_hours=24) == 1


def test_workers_endpoint_and_health_report_heartbeats(api, settings):
    _beater(settings).beat()
    body = api.get("/api/workers").json()
    assert body[0]["worker_id"] == "w1" and body[0]["health"] == "healthy"
    assert api.get("/api/health").json()["workers"]["detail"]["healthy"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_killed_celery_worker_is_dead_at_once_with_its_lease_at_risk(broker_url, settings, tmp_path):
    """A real worker process beats; SIGKILL ends it, and on its host it is shown dead at once (not
    stale after the stale delay), with the lease its pool process holds at risk (the sweeper
    reclaims it once it expires), so it stays in the default view until then."""
    from tests.workers import WorkerProcess, celery_app_on

    settings.LASHOPS_WORKER_STALE_SECONDS = 60
    worker = WorkerProcess(
        broker_url,
        concurrency=1,
        log_path=tmp_path / "worker.log",
        extra_env={"LASHOPS_WORKER_HEARTBEAT": "1", "LASHOPS_WORKER_BEAT_SECONDS": "0.3"},
    )
    try:
        with celery_app_on(broker_url) as app:
            worker.wait_ready(app)
        row = wait_until(
            lambda: WorkerHeartbeat.objects.filter(worker_id__startswith=worker.name).first(),
            timeout=20.0,
            interval=0.1,
        )
        assert row.kind == "celery" and row.queues == ["lashops"] and row.pid != worker.pid  # a pool process
        Lease.objects.create(
            scope="process", key="p1", holder=f"{row.holder_prefix}n1", token=1,
            expires_at=timezone.now() + timedelta(seconds=60),
        )  # fmt: skip
        worker.kill()
        dead = wait_until(
            lambda: [w for w in worker_report(workspace=None) if w["health"] == "dead"], timeout=10, interval=0.1
        )
        assert dead[0]["worker_id"] == row.worker_id
        assert dead[0]["at_risk"] == [
            {"scope": "process", "key": "p1", "expires_at": dead[0]["at_risk"][0]["expires_at"]}
        ]
    finally:
        worker.stop()


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_shut_down_cleanly_is_stopped_not_stale(broker_url, settings, tmp_path):
    """SIGTERM to a real worker (a warm shutdown): its pool process marks its row stopped on the
    way out (``worker_process_shutdown``), so it is neither stale nor dead, and leaves the default view."""
    import os
    import signal

    from tests.workers import WorkerProcess, celery_app_on

    settings.LASHOPS_WORKER_STALE_SECONDS = 60
    worker = WorkerProcess(
        broker_url,
        concurrency=1,
        log_path=tmp_path / "worker.log",
        extra_env={"LASHOPS_WORKER_HEARTBEAT": "1", "LASHOPS_WORKER_BEAT_SECONDS": "0.3"},
    )
    try:
        with celery_app_on(broker_url) as app:
            worker.wait_ready(app)
        row = wait_until(
            lambda: WorkerHeartbeat.objects.filter(worker_id__startswith=worker.name).first(),
            timeout=20.0,
            interval=0.1,
        )
        os.kill(worker.pid, signal.SIGTERM)
        worker.proc.wait(timeout=30)
        row.refresh_from_db()
        assert row.stopped_at is not None and row.died_at is None
        assert worker_report(workspace=None) == []
        assert [w["health"] for w in worker_report(workspace=None, include_all=True)] == ["stopped"]
    finally:
        worker.stop()
