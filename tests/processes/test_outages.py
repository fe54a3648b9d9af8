"""Service outages under load: a private PostgreSQL restarted while real Celery workers run
processes (no worker is killed, so no step may run twice)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from processes_app.models import Process
from processes_app.services import process_start, process_sweep
from tests.support import postgres_instance
from tests.support.postgres_instance import PostgresInstance
from tests.workers import WorkerProcess, celery_app_on, current_database_url

pytestmark = [pytest.mark.postgres, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 8  # longer than the outage: a run that was in flight still holds its lease after it


@pytest.fixture
def private_pg():
    reason = postgres_instance.available()
    if reason:
        pytest.skip(reason)
    pg = PostgresInstance()
    try:
        pg.start()
        pg.create_database("lashops", schema_from=current_database_url())
        yield pg
    finally:
        pg.close()


def _lines(path: Path) -> list[str]:
    return [" ".join(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []


def _statuses(ids: list[str]) -> Counter:
    return Counter(Process.objects.filter(pk__in=ids).values_list("status", flat=True))


def test_a_database_restart_under_load_runs_no_step_twice(private_pg, broker_url, settings, tmp_path):
    from lashops.core.services import workspace_create

    log = tmp_path / "steps.log"
    steps, count = 8, 24
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_PROCESS_LEASE_SECONDS = LEASE_SECONDS
    settings.LASHOPS_PROCESS_REDISPATCH_SECONDS = 0
    worker_env = {
        "LASHOPS_PROCESS_DEFINITIONS": "tests.processes.definitions",
        "LASHOPS_PROCESS_LEASE_SECONDS": str(LEASE_SECONDS),
        "LASHOPS_SCHEDULER": "0",
    }
    workers: list[WorkerProcess] = []
    with private_pg.as_default_database("lashops"), celery_app_on(broker_url) as app:
        try:
            for name in ("a", "b"):
                worker = WorkerProcess(
                    broker_url, concurrency=2, log_path=tmp_path / f"{name}.log", extra_env=worker_env
                )
                workers.append(worker)
                worker.wait_ready(app)
            workspace = workspace_create(slug="outage", name="Outage")
            ids = [f"paced-{i:02d}" for i in range(count)]
            for pid in ids:
                process_start(
                    workspace=workspace,
                    process_id=pid,
                    definition="test.paced",
                    input={"log": str(log), "steps": steps, "pause": 0.1},
                    disposition="rerunnable",
                )
            deadline = time.monotonic() + 60
            while len(_lines(log)) < 12:  # the workers are mid-run
                assert time.monotonic() < deadline, "the workers never started"
                time.sleep(0.05)
            connection.close()
            down = private_pg.restart(down_seconds=3)
            assert down >= 3  # really down: connections were refused meanwhile
            ran_before = len(_lines(log))
            deadline = time.monotonic() + 120
            while True:
                connection.close()
                done = _statuses(ids)
                if done.get("running", 0) == 0:
                    break
                assert time.monotonic() < deadline, f"not finished after the outage: {done}"
                process_sweep()  # what beat does: re-dispatch what the outage left runnable
                time.sleep(0.5)
            failed = {p.pk: p.error for p in Process.objects.filter(pk__in=ids).exclude(status="completed")}
        finally:
            for worker in workers:
                worker.stop()
    assert all(w.proc.returncode is not None for w in workers)
    counts = Counter(_lines(log))
    duplicated = {line: n for line, n in counts.items() if n > 1}
    print(
        f"outage {down:.1f}s, {ran_before} steps before it, duplicated steps: {sum(duplicated.values()) - len(duplicated)}"
    )
    assert failed == {}, failed
    assert duplicated == {}, duplicated
    assert len(counts) == steps * count


def test_every_api_operation_answers_503_database_unavailable_while_the_database_is_down(private_pg, client):
    """Not 500 internal_error: a client can tell an outage (retry later) from a bug."""
    import re

    from lashops.core.services import api_key_create, workspace_create

    with private_pg.as_default_database("lashops"):
        workspace = workspace_create(slug="outage", name="Outage")
        key = api_key_create(workspace=workspace, name="outage").plaintext
        paths = client.get("/api/openapi.json").json()["paths"]
        private_pg.stop()
        assert not private_pg.accepting()  # really down
        answers: dict[str, tuple[int, str, str | None]] = {}
        try:
            for path, operations in paths.items():
                for method in operations:
                    if path == "/api/health":
                        continue  # its own report (503 "down"), covered by the health tests
                    url = re.sub(r"\{[^}]+\}", "x1", path)
                    response = client.generic(
                        method.upper(),
                        url,
                        data="{}",
                        content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {key}",
                    )
                    code = response.json().get("error", {}).get("code", "") if response.content else ""
                    answers[f"{method.upper()} {path}"] = (response.status_code, code, response.get("Retry-After"))
        finally:
            private_pg.start()
    assert len(answers) > 40
    wrong = {op: answer for op, answer in answers.items() if answer != (503, "database_unavailable", "5")}
    assert wrong == {}, wrong


@pytest.mark.django_db(transaction=True)
def test_a_start_accepted_while_the_broker_is_down_answers_201_and_runs_once_it_is_back(
    redis_instance, api, settings, tmp_path
):
    """The after-commit send to the broker fails: the request still succeeded (the process is
    committed), so it answers 201 and the sweep sends the drive once the broker is back."""
    broker = redis_instance.url(db=0)
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_PROCESS_REDISPATCH_SECONDS = 0
    worker_env = {"LASHOPS_PROCESS_DEFINITIONS": "tests.processes.definitions", "LASHOPS_SCHEDULER": "0"}
    with celery_app_on(broker) as app:
        redis_instance.stop()
        assert not redis_instance.ping()  # really down
        response = api.post(
            "/api/processes",
            {"id": "while-down", "definition": "test.one_step", "input": {"n": 4}, "disposition": "rerunnable"},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        assert Process.objects.get(pk="while-down").status == "running"  # committed, not run
        redis_instance.start()
        worker = WorkerProcess(broker, concurrency=1, log_path=tmp_path / "worker.log", extra_env=worker_env)
        try:
            worker.wait_ready(app)
            deadline = time.monotonic() + 30
            while Process.objects.get(pk="while-down").status == "running":
                assert time.monotonic() < deadline, "the process never ran after the broker came back"
                process_sweep()  # what beat does once the broker is back
                time.sleep(0.3)
        finally:
            worker.stop()
    proc = Process.objects.get(pk="while-down")
    assert (proc.status, proc.output) == ("completed", {"value": 8})


def test_a_socket_opened_while_the_database_is_down_is_closed_cleanly_with_1013(private_pg):
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from lashops.asgi import application
    from lashops.core.services import api_key_create, workspace_create

    async def connect(key: str) -> tuple[bool, dict, dict]:
        headers = [(b"authorization", f"Bearer {key}".encode())]
        socket = WebsocketCommunicator(application, "/ws/processes/?after=0", headers=headers)
        connected, _ = await socket.connect(timeout=10)
        error = await socket.receive_json_from(timeout=5) if connected else {}
        closed = await socket.receive_output(timeout=5) if connected else {}
        return connected, error, closed

    with private_pg.as_default_database("lashops"):
        workspace = workspace_create(slug="outage", name="Outage")
        key = api_key_create(workspace=workspace, name="outage").plaintext
        private_pg.stop()
        try:
            connected, error, closed = async_to_sync(connect)(key)
        finally:
            private_pg.start()
    assert connected
    assert error["type"] == "stream.error" and error["data"]["code"] == "database_unavailable"
    assert (closed["type"], closed["code"]) == ("websocket.close", 1013)


def test_a_background_turn_accepted_while_the_broker_is_down_answers_202_and_the_turn_sweep_runs_it(
    redis_instance, api, workspace, settings, tmp_path
):
    """The same after-commit send serves turns: 202, not 500, and turns_sweep sends it later."""
    from sessions_app.models import Turn
    from sessions_app.services import session_open, turns_sweep

    broker = redis_instance.url(db=0)
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    model = {"provider": "scripted", "model": "scripted-1", "parameters": {"script": [{"text": "Done."}]}}
    session_open(workspace=workspace, session_id="s-down", model=model)
    with celery_app_on(broker) as app:
        redis_instance.stop()
        assert not redis_instance.ping()  # really down
        response = api.post(
            "/api/sessions/s-down/turns", {"input": "hello", "background": True}, content_type="application/json"
        )
        assert response.status_code == 202, response.content
        turn_id = response.json()["id"]
        redis_instance.start()
        worker = WorkerProcess(
            broker, concurrency=1, log_path=tmp_path / "worker.log", extra_env={"LASHOPS_SCHEDULER": "0"}
        )
        try:
            worker.wait_ready(app)
            assert turn_id in turns_sweep()  # what beat does once the broker is back
            deadline = time.monotonic() + 30
            while Turn.objects.get(pk=turn_id).status != "committed":
                assert time.monotonic() < deadline, "the turn never ran after the broker came back"
                time.sleep(0.3)
        finally:
            worker.stop()


def test_a_step_that_finished_during_an_outage_is_recorded_once_the_database_is_back(private_pg, settings, tmp_path):
    """In-process drive: the step's record cannot be written while the database is down; the
    engine retries it (its lease is still its own) instead of failing the process or running
    the step again."""
    import threading

    from lashops.core.services import workspace_create
    from processes_app.engine import drive
    from tests.processes.definitions import HOOKS

    settings.LASHOPS_PROCESS_LEASE_SECONDS = 6
    log = tmp_path / "steps.log"
    outage: dict[str, bool] = {}

    def stop_for_a_second() -> None:
        if outage:
            return
        private_pg.stop()
        outage["down"] = not private_pg.accepting()
        threading.Timer(1.0, private_pg.start).start()

    HOOKS["outage"] = stop_for_a_second
    try:
        with private_pg.as_default_database("lashops"):
            workspace = workspace_create(slug="outage", name="Outage")
            process_start(
                workspace=workspace,
                process_id="hooked",
                definition="test.hooked",
                input={"log": str(log), "hook": "outage"},
                disposition="rerunnable",
            )
            deadline = time.monotonic() + 60
            while True:
                drive(process_ids=["hooked"])
                connection.close()
                try:
                    status = Process.objects.values_list("status", flat=True).get(pk="hooked")
                except Exception:  # the database is still coming back
                    status = "unknown"
                if status not in ("running", "unknown"):
                    break
                assert time.monotonic() < deadline, "the process never finished"
                time.sleep(0.5)
                connection.close()
                process_sweep()
            proc = Process.objects.get(pk="hooked")
    finally:
        HOOKS.pop("outage", None)
    assert outage == {"down": True}  # the database really was down while the step ran
    assert (proc.status, proc.error) == ("completed", None)
    assert Counter(_lines(log)) == {"hooked before": 1, "hooked middle": 1, "hooked after": 1}
