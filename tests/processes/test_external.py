"""Completing external processes from outside: POST /api/processes/{id}/complete."""

from __future__ import annotations

from typing import Any

import pytest

from processes_app.context import ProcessContext
from processes_app.definitions import process_definition
from processes_app.models import Process, ProcessEvent

pytestmark = pytest.mark.django_db

AFTER_STEP_RUNS: list[str] = []


@process_definition("test.delegates")
def delegates(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """Prepare, hand the charge to an outside system, then act on its answer."""
    prepared = ctx.step("prepare", lambda: "prepared")
    result = ctx.run_external("billing.charge", {"amount": input.get("amount", 5)}, timeout=input.get("timeout"))

    def after() -> str:
        AFTER_STEP_RUNS.append(ctx.process_id)
        return "charged" if result["status"] == "completed" else "not charged"

    return {"prepared": prepared, "external": result, "after": ctx.step("after", after)}


def _post(api, path: str, body: Any):
    return api.post(path, data=body, content_type="application/json")


def _start_external(api, process_id: str = "ext-1", **extra: Any) -> dict[str, Any]:
    body = {"id": process_id, "kind": "external", "definition": "billing.charge", "disposition": "externally_owned"}
    response = _post(api, "/api/processes", body | extra)
    assert response.status_code == 201, response.content
    return response.json()


def _terminal_events(process_id: str) -> list[ProcessEvent]:
    return list(ProcessEvent.objects.filter(process_id=process_id, type__in=["process.completed", "process.failed"]))


def test_an_outside_system_completes_an_external_process(api):
    started = _start_external(api)
    assert started["status"] == "running" and started["wait"]["kind"] == "external"
    cursor = api.get("/api/processes/changes?since=0").json()["latest_cursor"]

    done = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_1"}, "idempotency_key": "k1"})

    assert done.status_code == 200, done.content
    body = done.json()
    assert body["status"] == "completed" and body["output"] == {"charge": "ch_1"}
    assert body["replayed"] is False and body["wait"] is None and body["finished_at"]
    [event] = _terminal_events("ext-1")
    assert event.data["completion"]["key"] == "k1"
    changes = api.get(f"/api/processes/changes?since={cursor}").json()["changes"]
    assert [c["type"] for c in changes] == ["process.completed"]  # the durable stream carries it


def test_an_outside_system_can_fail_an_external_process(api):
    _start_external(api)
    failed = _post(api, "/api/processes/ext-1/complete", {"error": {"code": "card_declined", "message": "no funds"}})
    assert failed.status_code == 200, failed.content
    assert failed.json()["status"] == "failed"
    assert failed.json()["error"] == {"code": "card_declined", "message": "no funds", "details": None}


def test_a_retried_completion_answers_the_same_result_once(api):
    _start_external(api)
    body = {"output": {"charge": "ch_1"}, "idempotency_key": "k1"}
    first = _post(api, "/api/processes/ext-1/complete", body)
    again = _post(api, "/api/processes/ext-1/complete", body)
    same_payload = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_1"}})

    assert first.status_code == again.status_code == same_payload.status_code == 200
    assert again.json()["replayed"] is True and same_payload.json()["replayed"] is True
    assert again.json()["output"] == first.json()["output"]
    assert again.json()["finished_at"] == first.json()["finished_at"]
    assert len(_terminal_events("ext-1")) == 1


def test_a_different_second_completion_is_a_conflict(api):
    _start_external(api)
    _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_1"}, "idempotency_key": "k1"})

    other_output = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_2"}})
    same_key = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_2"}, "idempotency_key": "k1"})
    as_error = _post(api, "/api/processes/ext-1/complete", {"error": {"code": "late"}})

    for response in (other_output, same_key, as_error):
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "completion_conflict"
    assert "idempotency key" in same_key.json()["error"]["message"]
    assert Process.objects.get(pk="ext-1").output == {"charge": "ch_1"}


def test_a_process_in_the_wrong_state_is_a_conflict(api, drive):
    _post(api, "/api/processes", {"id": "own", "definition": "test.signals", "disposition": "rerunnable"})
    drive()
    not_external = _post(api, "/api/processes/own/complete", {"output": 1})
    assert not_external.status_code == 409
    assert not_external.json()["error"]["code"] == "not_externally_owned"

    _start_external(api, "gone")
    assert _post(api, "/api/processes/gone/cancel", {"reason": "changed my mind"}).status_code == 202
    cancelled = _post(api, "/api/processes/gone/complete", {"output": 1})
    assert cancelled.status_code == 409 and cancelled.json()["error"]["code"] == "process_finished"
    assert "cancelled" in cancelled.json()["error"]["message"]


def test_another_workspace_cannot_complete_a_process(api, other_workspace):
    from processes_app.services import process_start

    process_start(workspace=other_workspace, process_id="theirs", kind="external", disposition="externally_owned")
    assert _post(api, "/api/processes/theirs/complete", {"output": 1}).status_code == 404
    assert _post(api, "/api/processes/nobody/complete", {"output": 1}).status_code == 404
    assert Process.objects.get(pk="theirs").status == "running"


def test_bad_completion_payloads_are_422_with_field_paths(api):
    _start_external(api)

    both = _post(api, "/api/processes/ext-1/complete", {"output": 1, "error": {"code": "x"}})
    no_code = _post(api, "/api/processes/ext-1/complete", {"error": {"message": "what failed?"}})
    long_key = _post(api, "/api/processes/ext-1/complete", {"output": 1, "idempotency_key": "k" * 201})
    not_an_object = _post(api, "/api/processes/ext-1/complete", [1, 2])
    empty = _post(api, "/api/processes/ext-1/complete", {})

    for response in (both, no_code, long_key, not_an_object, empty):
        assert response.status_code == 422, response.content
    assert {d["path"] for d in both.json()["error"]["details"]} == {"body.payload.output", "body.payload.error"}
    assert [d["path"] for d in no_code.json()["error"]["details"]] == ["body.payload.error.code"]
    assert [d["path"] for d in long_key.json()["error"]["details"]] == ["body.payload.idempotency_key"]
    assert [d["path"] for d in empty.json()["error"]["details"]] == ["body.payload"]
    assert Process.objects.get(pk="ext-1").status == "running"


def test_completion_after_the_deadline_is_refused(api, make_due):
    started = _start_external(api, timeout_seconds=60)
    assert started["wait"]["kind"] == "external" and started["wait"]["until"]
    make_due("ext-1")

    late = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_1"}})
    again = _post(api, "/api/processes/ext-1/complete", {"output": {"charge": "ch_1"}})

    for response in (late, again):
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "deadline_exceeded"
    proc = Process.objects.get(pk="ext-1")
    assert proc.status == "failed" and proc.error["code"] == "deadline_exceeded" and proc.output is None
    assert len(_terminal_events("ext-1")) == 1


def test_the_sweep_fails_an_external_process_past_its_deadline(api, make_due):
    from processes_app.services import process_sweep

    _start_external(api, timeout_seconds=60)
    process_sweep()
    assert Process.objects.get(pk="ext-1").status == "running"
    make_due("ext-1")
    process_sweep()
    assert Process.objects.get(pk="ext-1").error["code"] == "deadline_exceeded"


def test_a_timeout_is_only_for_external_processes(api):
    body = {"definition": "test.one_step", "disposition": "rerunnable", "timeout_seconds": 5}
    response = _post(api, "/api/processes", body)
    assert response.status_code == 422
    assert [d["path"] for d in response.json()["error"]["details"]] == ["body.timeout_seconds"]


def test_completing_an_external_step_runs_the_next_step_exactly_once(api, drive, django_capture_on_commit_callbacks):
    AFTER_STEP_RUNS.clear()
    _post(api, "/api/processes", {"id": "order", "definition": "test.delegates", "disposition": "rerunnable"})
    drive()
    parent = api.get("/api/processes/order").json()
    assert parent["status"] == "running" and parent["wait"]["kind"] == "child"
    child_id = parent["wait"]["child"]
    child = api.get(f"/api/processes/{child_id}").json()
    assert child["kind"] == "external" and child["parent"] == "order" and child["input"] == {"amount": 5}

    with django_capture_on_commit_callbacks() as callbacks:
        done = _post(api, f"/api/processes/{child_id}/complete", {"output": {"charge": "ch_9"}})
    assert done.status_code == 200, done.content
    assert callbacks, "completing the child dispatches a drive for its parent"
    drive()

    finished = api.get("/api/processes/order").json()
    assert finished["status"] == "completed", finished
    assert finished["output"] == {
        "prepared": "prepared",
        "external": {"status": "completed", "output": {"charge": "ch_9"}, "error": None},
        "after": "charged",
    }
    assert _post(api, f"/api/processes/{child_id}/complete", {"output": {"charge": "ch_9"}}).json()["replayed"]
    assert drive() == 0
    assert AFTER_STEP_RUNS == ["order"]


def test_an_external_step_past_its_deadline_lets_the_process_continue(api, drive, make_due):
    from processes_app.services import process_sweep

    AFTER_STEP_RUNS.clear()
    body = {"id": "slow", "definition": "test.delegates", "input": {"timeout": 60}, "disposition": "rerunnable"}
    _post(api, "/api/processes", body)
    drive()
    child_id = api.get("/api/processes/slow").json()["wait"]["child"]
    make_due(child_id)
    process_sweep()
    drive()

    output = api.get("/api/processes/slow").json()["output"]
    assert output["external"]["status"] == "failed" and output["external"]["error"]["code"] == "deadline_exceeded"
    assert output["after"] == "not charged"
    late = _post(api, f"/api/processes/{child_id}/complete", {"output": {"charge": "ch_9"}})
    assert late.status_code == 409 and late.json()["error"]["code"] == "deadline_exceeded"


def test_admin_completes_external_processes(admin_client, api):
    _start_external(api)
    form = admin_client.post(
        "/admin/processes_app/process/", {"action": "complete_processes", "_selected_action": ["ext-1"]}
    )
    assert form.status_code == 200 and b"Complete" in form.content
    done = admin_client.post(
        "/admin/processes_app/process/",
        {
            "action": "complete_processes",
            "_selected_action": ["ext-1"],
            "apply": "1",
            "outcome": "completed",
            "output": '{"charge": "ch_admin"}',
            "error_code": "",
            "error_message": "",
        },
        follow=True,
    )
    assert b"Completed 1 process" in done.content
    proc = Process.objects.get(pk="ext-1")
    assert proc.status == "completed" and proc.output == {"charge": "ch_admin"}
    assert _terminal_events("ext-1")[0].data["completion"]["via"] == "admin"
