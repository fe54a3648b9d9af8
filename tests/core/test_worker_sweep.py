"""The worker sweep: a worker that stopped beating is reported once (``worker.stale`` on every
workspace's fleet stream, with what it was running and the leases at risk, of that workspace), and its next beat
reports it once more (``worker.recovered``). Also with two sweepers racing, and live on /ws/fleet/."""

import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.utils import timezone

from lashops.core import heartbeat
from lashops.core.models import Event, Lease, WorkerHeartbeat
from lashops.core.scheduler import _entries
from lashops.core.services import workers_sweep
from processes_app.models import Process


def _beater(settings, worker_id: str = "w1") -> heartbeat.Beater:
    settings.LASHOPS_WORKER_HEARTBEAT = True
    settings.LASHOPS_WORKER_STALE_SECONDS = 30
    return heartbeat.Beater(worker_id=worker_id, kind="celery", queues=["lashops"])


def _age(worker_id: str = "w1", seconds: float = 31) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_beat_at=timezone.now() - timedelta(seconds=seconds))


def _worker_events(workspace) -> list[Event]:
    return list(Event.objects.filter(workspace=workspace, type__startswith="worker.").order_by("cursor"))


def test_the_sweep_is_on_the_beat_schedule_and_so_on_the_in_process_scheduler():
    assert ("lashops-workers-sweep", "lashops.core.workers_sweep") in {(name, task) for name, task, _ in _entries()}


def test_a_silent_worker_is_reported_stale_once_and_recovered_once_when_it_beats_again(
    db, settings, workspace, django_capture_on_commit_callbacks
):
    Process.objects.create(
        id="p1", workspace=workspace, disposition="rerunnable", registration_hash="x", runnable_since=timezone.now()
    )
    beater = _beater(settings)
    with heartbeat.track("lashops.processes.drive", process_id="p1"):
        beater.beat()
    Lease.objects.create(
        scope="process",
        key="p1",
        holder=f"{beater.host}:{beater.pid}:n1",
        token=4,
        expires_at=timezone.now() + timedelta(seconds=20),
    )
    assert workers_sweep() == []  # beating: nothing to report
    _age(seconds=31)

    with django_capture_on_commit_callbacks(execute=True) as sent:
        assert workers_sweep() == ["w1"]
    [stale] = _worker_events(workspace)
    assert stale.type == "worker.stale" and stale.subject == {"worker": "w1"}
    data = stale.data
    assert (data["worker_id"], data["host"], data["pid"]) == ("w1", beater.host, beater.pid)
    assert data["last_beat_at"] == WorkerHeartbeat.objects.get().last_beat_at.isoformat()
    assert data["in_flight"][0]["task"] == "lashops.processes.drive" and data["in_flight"][0]["process_id"] == "p1"
    assert [(r["scope"], r["key"], r["holder"]) for r in data["at_risk"]] == [
        ("process", "p1", f"{beater.host}:{beater.pid}:n1")
    ]
    assert len(sent) == 1  # the live send after commit
    assert WorkerHeartbeat.objects.get().stale_reported_at is not None

    assert workers_sweep() == []  # already reported
    _age(seconds=120)
    assert workers_sweep() == []  # still silent, still reported once
    assert len(_worker_events(workspace)) == 1

    beater.beat()
    stale_event, recovered = _worker_events(workspace)
    assert recovered.type == "worker.recovered" and recovered.cursor == stale_event.cursor + 1
    assert recovered.data["stale_reported_at"] == data["stale_reported_at"]
    assert WorkerHeartbeat.objects.get().stale_reported_at is None
    beater.beat()
    assert len(_worker_events(workspace)) == 2  # healthy beats publish nothing durable


def test_every_workspace_stream_gets_the_transition_once(db, settings, workspace, other_workspace):
    _beater(settings).beat()
    _age()
    workers_sweep()
    workers_sweep()
    assert [e.type for e in _worker_events(workspace)] == ["worker.stale"]
    assert [e.type for e in _worker_events(other_workspace)] == ["worker.stale"]


def test_stopped_workers_are_not_reported(db, settings, workspace):
    beater = _beater(settings)
    beater.beat()
    beater.stop()
    _age()
    assert workers_sweep() == []


def test_workers_api_shows_the_stale_flag(api, settings, workspace):
    _beater(settings).beat()
    [worker] = api.get("/api/workers").json()
    assert worker["health"] == "healthy" and worker["stale_reported_at"] is None
    _age()
    workers_sweep()
    assert api.get("/api/workers").json() == []  # stale with nothing at risk: out of the default view
    [worker] = api.get("/api/workers?all=1").json()
    assert worker["health"] == "stale" and worker["stale_reported_at"] is not None


def test_admin_worker_list_shows_stale_state(client, django_user_model, settings, workspace):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-123456"))
    _beater(settings, "w1").beat()
    _beater(settings, "w2").beat()
    _age("w2")
    workers_sweep()
    page = client.get("/admin/core/workerheartbeat/").content.decode()
    assert "stale (reported)" in page and "healthy" in page
    filtered = client.get("/admin/core/workerheartbeat/?stale_reported_at__isempty=0").content.decode()
    assert "w2" in filtered and ">w1<" not in filtered


@pytest.mark.django_db(transaction=True)
def test_two_sweepers_racing_report_a_worker_once(settings, workspace):
    beaters = [_beater(settings, f"w{i}") for i in range(6)]
    for beater in beaters:
        beater.beat()
    WorkerHeartbeat.objects.update(last_beat_at=timezone.now() - timedelta(seconds=60))
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(workers_sweep())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    reported = sorted(results[0] + results[1])
    assert reported == sorted(f"w{i}" for i in range(6))
    stale = _worker_events(workspace)
    assert sorted(e.subject["worker"] for e in stale) == reported


@pytest.mark.django_db(transaction=True)
async def test_stale_and_recovered_arrive_live_on_the_fleet_socket(settings, workspace, api_key):
    from lashops.asgi import application

    beater = await sync_to_async(_beater)(settings)
    await sync_to_async(beater.beat)()
    comm = WebsocketCommunicator(application, "/ws/fleet/", headers=[(b"authorization", f"Bearer {api_key}".encode())])
    assert (await comm.connect())[0]
    while (await comm.receive_json_from(timeout=3))["type"] != "stream.ready":
        pass

    await sync_to_async(_age)()
    await sync_to_async(workers_sweep)()
    stale = await _next_durable(comm)
    assert stale["type"] == "worker.stale" and stale["data"]["worker_id"] == "w1" and stale["cursor"] is not None

    await sync_to_async(beater.beat)()
    recovered = await _next_durable(comm)
    assert recovered["type"] == "worker.recovered" and recovered["cursor"] == stale["cursor"] + 1
    await comm.disconnect()


async def _next_durable(comm: WebsocketCommunicator) -> dict:
    """The next event with a cursor (beats also go out live, cursor-less, to the same socket)."""
    while True:
        message = await comm.receive_json_from(timeout=3)
        if message.get("cursor") is not None:
            return message
