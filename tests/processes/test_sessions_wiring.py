"""Processes and sessions together: an agent turn run by a process, wake-target delivery of
emitted events as queued session input (exactly once, across a crash), and session deletion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from lashops.core.models import Lease
from processes_app.engine import enqueue_wake
from processes_app.models import Process, ProcessEvent
from processes_app.services import process_start
from sessions_app.models import PendingInput, Session, Turn
from sessions_app.services import session_open
from tests.processes.definitions import SimulatedCrash
from tests.support.scripted import ANSWER, CALC, scripted

pytestmark = pytest.mark.django_db


def _session(workspace, session_id: str = "s1", *steps: dict) -> Session:
    session, _ = session_open(workspace=workspace, session_id=session_id, model=scripted(*steps))
    return session


def test_an_agent_turn_process_runs_one_turn_in_the_session_and_returns_it(workspace, drive):
    session = _session(workspace, "s1", CALC, ANSWER)
    proc, _ = process_start(
        workspace=workspace,
        process_id="subagent",
        definition="agent.turn",
        input={"session": "s1", "task": "What is 6*7?"},
        disposition="rerunnable",
    )
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed", proc.error
    assert proc.output["status"] == "committed" and proc.output["final_text"] == "It is 42."
    turn = Turn.objects.get(session=session)
    assert proc.output["turn_id"] == turn.pk and turn.source_key == "process:subagent/agent_turn/s1/0"
    assert ProcessEvent.objects.filter(process=proc, type="process.agent_turn").count() == 1


def test_re_running_an_agent_turn_whose_record_was_lost_reuses_the_turn(workspace, drive):
    from lashops.core.models import Effect

    _session(workspace, "s1", CALC, ANSWER)
    proc, _ = process_start(
        workspace=workspace,
        process_id="subagent",
        definition="agent.turn",
        input={"session": "s1", "task": "What is 6*7?"},
        disposition="rerunnable",
    )
    drive()
    # The crash window: the turn committed, its record in the process journal did not.
    Effect.objects.filter(scope="process:subagent").delete()
    Process.objects.filter(pk="subagent").update(status="running", output=None, finished_at=None)
    drive(["subagent"])
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output["final_text"] == "It is 42."
    assert Turn.objects.filter(session_id="s1").count() == 1  # turn_start is idempotent by source key


def test_an_emitted_event_reaches_the_wake_session_as_queued_input_once_across_a_crash(workspace, drive, tmp_path):
    _session(workspace, "s1")
    marker = tmp_path / "crashed"
    process_start(
        workspace=workspace,
        process_id="waker",
        definition="test.emit_then_crash",
        input={"marker": str(marker)},
        disposition="rerunnable",
        wake_session_id="s1",
    )
    with pytest.raises(SimulatedCrash):
        drive()
    assert marker.exists()  # it really died after emitting
    inputs = PendingInput.objects.filter(session_id="s1")
    assert [i.source_key for i in inputs] == ["process:waker/emit/progress/0"]
    assert Process.objects.get(pk="waker").status == "running"

    Lease.objects.filter(scope="process", key="waker").update(expires_at=timezone.now() - timedelta(seconds=1))
    drive()

    proc = Process.objects.get(pk="waker")
    assert proc.status == "completed" and proc.output == {"after": "survived"} and proc.run_count == 2
    assert inputs.count() == 1
    assert inputs.get().text == '[process waker] progress: {"pct": 50}'


def test_a_repeated_wake_delivery_with_the_same_source_key_is_not_duplicated(workspace):
    session = _session(workspace, "s1")
    for _ in range(2):
        enqueue_wake(
            workspace=workspace,
            session_id=session.pk,
            process_id="p1",
            source_key="process:p1/emit/progress/3",
            payload={"event": "progress", "data": {}},
        )
    assert PendingInput.objects.filter(session=session).count() == 1


def test_deleting_a_session_through_the_api_reports_orphans_and_cancels_nothing(api, workspace, drive):
    _session(workspace, "s1")
    _session(workspace, "s2")
    common = {"workspace": workspace, "definition": "test.sleeper", "disposition": "rerunnable"}
    process_start(process_id="mine", grant_session_ids=["s1"], **common)
    process_start(process_id="shared", grant_session_ids=["s1", "s2"], **common)
    process_start(process_id="woken", wake_session_id="s1", **common)
    drive()  # all three park on their timers

    response = api.delete("/api/sessions/s1")

    assert response.status_code == 200
    report = response.json()["process"]
    assert report["orphaned_process_ids"] == ["mine", "woken"]
    assert report["preserved_process_ids"] == ["shared"]
    assert set(Process.objects.values_list("status", flat=True)) == {"running"}
    assert Process.objects.filter(cancel_requested_at__isnull=False).count() == 0
    assert not Session.objects.filter(pk="s1").exists()
