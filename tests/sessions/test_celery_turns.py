"""A background turn driven by a real Celery worker process (production topology)."""

import pytest

from sessions_app.models import Turn
from tests.support.polling import wait_until
from tests.support.scripted import ANSWER, CALC, scripted
from tests.workers import WorkerProcess, celery_app_on

pytestmark = [pytest.mark.postgres, pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def test_background_turn_runs_on_a_celery_worker(api, broker_url, settings, tmp_path):
    settings.LASHOPS_RUNNER = "celery"
    api.post("/api/sessions", data={"id": "bg", "model": scripted(CALC, ANSWER)}, content_type="application/json")
    with celery_app_on(broker_url) as app:
        worker = WorkerProcess(broker_url, log_path=tmp_path / "worker.log")
        try:
            worker.wait_ready(app)
            response = api.post(
                "/api/sessions/bg/turns", data={"input": "6*7?", "background": True}, content_type="application/json"
            )
            assert response.status_code == 202
            turn_id = response.json()["id"]
            turn = wait_until(lambda: Turn.objects.filter(pk=turn_id, status="committed").first(), timeout=30)
        finally:
            worker.stop()
    assert (turn.outcome, turn.final_text) == ("finished", "It is 42.")
    assert turn.drive_attempts == 1
