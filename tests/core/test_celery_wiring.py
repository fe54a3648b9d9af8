"""Celery wiring with real worker and beat processes on Redis and PostgreSQL."""

import subprocess
import sys
import time

import pytest

from lashops.core.models import Event
from tests.workers import ROOT, WorkerProcess, celery_app_on, service_env

pytestmark = [pytest.mark.postgres, pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def test_real_worker_runs_a_task_dispatched_after_commit(api, workspace, broker_url, settings, tmp_path):
    settings.LASHOPS_RUNNER = "celery"
    with celery_app_on(broker_url) as app:
        worker = WorkerProcess(broker_url, log_path=tmp_path / "worker.log")
        try:
            worker.wait_ready(app)
            health = api.get("/api/health").json()
            assert worker.name in health["runner"]["detail"]["workers"]

            response = api.post("/api/runner/probe")
            assert response.status_code == 202
            probe = response.json()["probe_id"]

            deadline = time.monotonic() + 20
            done = None
            while done is None and time.monotonic() < deadline:
                done = Event.objects.filter(type="runner.probe_completed", subject__probe=probe).first()
                time.sleep(0.1)
            assert done is not None, (tmp_path / "worker.log").read_text()[-2000:]
            assert done.data["pid"] != 0
            import os

            assert done.data["pid"] != os.getpid()  # ran in the worker process, not here
        finally:
            worker.stop()


def test_health_reports_no_worker_when_none_answers(api, broker_url, settings):
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_HEALTH_PING_TIMEOUT = 0.3
    with celery_app_on(broker_url):
        body = api.get("/api/health").json()
    assert body["status"] == "degraded"
    assert body["runner"]["ok"] is False and body["runner"]["detail"]["workers"] == []


def test_beat_starts_against_the_broker(broker_url, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "lashops",
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(tmp_path / "beat-schedule"),
        ],
        cwd=ROOT,
        env=service_env(broker_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        seen = ""
        while time.monotonic() < deadline and "beat: Starting" not in seen:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
        assert "beat: Starting" in seen, seen
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a loaded machine; the assertion above is what matters
            proc.kill()
            proc.wait(timeout=10)
