"""/api/processes and /api/triggers over HTTP."""

import pytest

pytestmark = pytest.mark.django_db


def _post(api, path, body):
    return api.post(path, data=body, content_type="application/json")


def test_start_get_list_and_events(api, drive):
    body = {"id": "job-1", "definition": "test.one_step", "input": {"n": 5}, "disposition": "rerunnable"}
    created = _post(api, "/api/processes", body)
    assert created.status_code == 201, created.content
    assert created.json()["created"] is True and created.json()["status"] == "running"
    again = _post(api, "/api/processes", body)
    assert again.status_code == 200 and again.json()["created"] is False
    changed = _post(api, "/api/processes", body | {"input": {"n": 6}})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "registration_conflict"

    drive()
    detail = api.get("/api/processes/job-1").json()
    assert detail["status"] == "completed" and detail["output"] == {"value": 10}
    assert detail["lease"]["holder"] == "" and detail["lease"]["token"] >= 1
    listed = api.get("/api/processes?status=completed&definition=test.one_step").json()
    assert [p["id"] for p in listed["items"]] == ["job-1"]
    events = api.get("/api/processes/job-1/events").json()
    assert [e["type"] for e in events["events"]][-1] == "process.completed"


def test_disposition_is_required_and_bad_input_is_422(api):
    missing = _post(api, "/api/processes", {"definition": "test.one_step"})
    assert missing.status_code == 422
    unknown = _post(api, "/api/processes", {"definition": "nope", "disposition": "rerunnable"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_definition"


def test_signal_and_cancel_over_http(api, drive):
    _post(api, "/api/processes", {"id": "s1", "definition": "test.signals", "disposition": "rerunnable"})
    drive()
    bad = _post(api, "/api/processes/s1/signal", {"name": "go", "payload": {"n": "no"}})
    assert bad.status_code == 422
    unknown = _post(api, "/api/processes/s1/signal", {"name": "what"})
    assert unknown.status_code == 422
    ok = _post(api, "/api/processes/s1/signal", {"name": "go", "payload": {"n": 3}})
    assert ok.status_code == 202
    drive()
    assert api.get("/api/processes/s1").json()["output"] == {"got": [{"n": 3}]}
    late = _post(api, "/api/processes/s1/signal", {"name": "go", "payload": {"n": 4}})
    assert late.status_code == 409 and late.json()["error"]["code"] == "process_finished"

    _post(api, "/api/processes", {"id": "c1", "definition": "test.sleeper", "disposition": "rerunnable"})
    drive()
    cancelled = _post(api, "/api/processes/c1/cancel", {"cascade": False})
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert _post(api, "/api/processes/c1/cancel", {}).status_code == 409


def test_another_workspace_cannot_see_a_process(api, other_workspace, drive):
    from processes_app.services import process_start

    process_start(workspace=other_workspace, process_id="theirs", definition="test.one_step", disposition="rerunnable")
    assert api.get("/api/processes/theirs").status_code == 404
    assert _post(api, "/api/processes/theirs/cancel", {}).status_code == 404
    assert api.get("/api/processes").json()["count"] == 0


def test_change_feed_lists_transitions_after_a_cursor(api, drive):
    start = api.get("/api/processes/changes?since=0").json()["latest_cursor"]
    _post(api, "/api/processes", {"id": "f1", "definition": "test.one_step", "disposition": "rerunnable"})
    drive()
    page = api.get(f"/api/processes/changes?since={start}").json()
    types = [c["type"] for c in page["changes"]]
    # Transitions only: a step's completion stays in the process's own log.
    assert types == ["process.created", "process.started", "process.completed"]
    assert all(c["subject"]["process"] == "f1" for c in page["changes"])
    log = [e["type"] for e in api.get("/api/processes/f1/events").json()["events"]]
    assert "process.step_completed" in log
    assert api.get(f"/api/processes/changes?since={page['next_cursor']}").json()["changes"] == []


def test_trigger_occurrences_start_one_process_per_subscription_exactly_once(api, drive):
    assert (
        _post(
            api, "/api/triggers/events", {"name": "order.paid", "payload_schema": {"type": "object", "required": ["n"]}}
        ).status_code
        == 200
    )
    sub = _post(
        api,
        "/api/triggers/subscriptions",
        {"event": "order.paid", "definition": "test.one_step", "input_template": {"n": "$payload.n"}},
    )
    assert sub.status_code == 201, sub.content
    first = _post(
        api, "/api/triggers/occurrences", {"event": "order.paid", "occurrence_id": "o-1", "payload": {"n": 21}}
    )
    assert first.status_code == 201 and first.json()["created"] is True
    again = _post(
        api, "/api/triggers/occurrences", {"event": "order.paid", "occurrence_id": "o-1", "payload": {"n": 21}}
    )
    assert again.status_code == 200 and again.json()["deliveries"] == first.json()["deliveries"]
    changed = _post(
        api, "/api/triggers/occurrences", {"event": "order.paid", "occurrence_id": "o-1", "payload": {"n": 1}}
    )
    assert changed.status_code == 409
    invalid = _post(api, "/api/triggers/occurrences", {"event": "order.paid", "occurrence_id": "o-2", "payload": {}})
    assert invalid.status_code == 422
    [delivery] = first.json()["deliveries"]
    drive()
    proc = api.get(f"/api/processes/{delivery['process_id']}").json()
    assert proc["status"] == "completed" and proc["output"] == {"value": 42}
    assert proc["provenance"]["occurrence"] == "o-1"
    assert api.get("/api/processes?definition=test.one_step").json()["count"] == 1


def test_schedules_emit_occurrences_when_due(api, workspace, drive):
    from datetime import timedelta

    from django.utils import timezone

    from processes_app.models import CronSchedule, TriggerOccurrence
    from processes_app.triggers import schedules_tick

    _post(api, "/api/triggers/events", {"name": "tick"})
    _post(api, "/api/triggers/subscriptions", {"event": "tick", "definition": "test.one_step", "input_template": {}})
    saved = _post(api, "/api/triggers/schedules", {"name": "every5", "event": "tick", "cron": "*/5 * * * *"})
    assert saved.status_code == 200 and saved.json()["next_run_at"]
    assert (
        _post(api, "/api/triggers/schedules", {"name": "bad", "event": "tick", "cron": "99 * * * *"}).status_code == 422
    )
    CronSchedule.objects.update(next_run_at=timezone.now() - timedelta(minutes=1))
    assert schedules_tick() == 1
    assert schedules_tick() == 0  # moved to its next tick
    occ = TriggerOccurrence.objects.get(workspace=workspace)
    assert occ.source == "cron" and occ.occurrence_id.startswith("cron:every5:")


def test_demo_seed_is_idempotent(workspace, drive):
    from processes_app.demo import seed
    from processes_app.models import CronSchedule, Process, TriggerSubscription

    seed(workspace=workspace)
    seed(workspace=workspace)
    assert set(Process.objects.values_list("pk", flat=True)) == {"demo-greet", "demo-approval", "demo-fanout"}
    assert TriggerSubscription.objects.count() == 1 and CronSchedule.objects.count() == 1
    drive()
    assert Process.objects.get(pk="demo-greet").output == {"greeting": "Hello, LashOps!"}
    assert Process.objects.get(pk="demo-approval").wait_kind == "timer"


def test_batch_start_creates_each_once_and_a_conflict_starts_nothing(api, drive):
    items = [
        {"id": f"f{i}", "definition": "test.one_step", "input": {"n": i}, "disposition": "rerunnable"} for i in range(3)
    ]
    created = _post(api, "/api/processes/batch", {"processes": items})
    assert created.status_code == 201, created.content
    assert [(p["id"], p["created"], p["status"]) for p in created.json()["processes"]] == [
        ("f0", True, "running"),
        ("f1", True, "running"),
        ("f2", True, "running"),
    ]
    again = _post(api, "/api/processes/batch", {"processes": items[:2]})
    assert again.status_code == 200 and [p["created"] for p in again.json()["processes"]] == [False, False]
    new = {"id": "f9", "definition": "test.one_step", "input": {}, "disposition": "rerunnable"}
    conflict = _post(api, "/api/processes/batch", {"processes": [new, items[0] | {"input": {"n": 7}}]})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "registration_conflict"
    assert api.get("/api/processes/f9").status_code == 404
    bad = _post(api, "/api/processes/batch", {"processes": [new | {"disposition": ""}]})
    assert bad.status_code == 422
    drive()
    assert api.get("/api/processes/f2").json()["output"] == {"value": 4}
