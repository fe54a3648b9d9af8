"""The runner on the embedded default: start, run, journal, park, finish."""

import pytest

from lashops.core.errors import Conflict, InvalidInput
from lashops.core.models import Effect, Lease
from processes_app.models import Process, ProcessEvent
from processes_app.services import process_start

pytestmark = pytest.mark.django_db


def _start(workspace, definition="test.one_step", input=None, **kw):
    kw.setdefault("disposition", "rerunnable")
    proc, _ = process_start(workspace=workspace, definition=definition, input=input or {}, **kw)
    return proc


def test_a_one_step_process_completes_with_its_output(workspace, drive):
    proc = _start(workspace, input={"n": 4})
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output == {"value": 8}
    assert proc.first_started_at is not None and proc.finished_at is not None
    types = list(ProcessEvent.objects.filter(process=proc).values_list("type", flat=True))
    assert types == ["process.created", "process.started", "process.step_completed", "process.completed"]
    assert Lease.objects.get(scope="process", key=proc.pk).holder == ""


def test_start_is_idempotent_by_id_and_registration(workspace):
    first, created = process_start(
        workspace=workspace, process_id="p1", definition="test.one_step", input={"n": 1}, disposition="rerunnable"
    )
    again, created_again = process_start(
        workspace=workspace, process_id="p1", definition="test.one_step", input={"n": 1}, disposition="rerunnable"
    )
    assert created and not created_again and again.pk == first.pk
    with pytest.raises(Conflict) as exc:
        process_start(
            workspace=workspace, process_id="p1", definition="test.one_step", input={"n": 2}, disposition="rerunnable"
        )
    assert exc.value.code == "registration_conflict"


def test_start_rejects_unknown_definition_and_missing_disposition(workspace):
    with pytest.raises(InvalidInput) as exc:
        process_start(workspace=workspace, definition="nope", input={}, disposition="rerunnable")
    assert exc.value.code == "unknown_definition"
    with pytest.raises(InvalidInput):
        process_start(workspace=workspace, definition="test.one_step", input={}, disposition="")


def test_a_recorded_step_is_returned_on_replay_not_run_again(workspace, drive):
    proc = _start(workspace, input={"n": 4})
    Effect.objects.create(
        workspace=workspace,
        scope=f"process:{proc.pk}",
        replay_key=f"process:{proc.pk}/step/double/0",
        kind="process.step",
        outcome={"name": "double", "ordinal": 0, "value": 1000},
    )
    drive()
    proc.refresh_from_db()
    assert proc.output == {"value": 1000}


def test_a_replay_whose_steps_changed_fails_explicitly(workspace, drive, make_due, tmp_path):
    name_file = tmp_path / "name"
    name_file.write_text("alpha")
    proc = _start(workspace, "test.flexible", {"name_file": str(name_file), "seconds": 60})
    drive()
    proc.refresh_from_db()
    assert proc.status == "running" and proc.wait_kind == "timer"
    name_file.write_text("beta")
    make_due(proc.pk)
    drive()
    proc.refresh_from_db()
    assert proc.status == "failed"
    assert proc.error["code"] == "replay_mismatch" and proc.error["ordinal"] == 0
    assert "alpha" in proc.error["message"] and "beta" in proc.error["message"]


def test_sleep_parks_without_holding_a_lease_and_resumes_when_due(workspace, drive, make_due):
    proc = _start(workspace, "test.sleeper", {"seconds": 30})
    drive()
    proc.refresh_from_db()
    assert proc.status == "running" and proc.wait_kind == "timer"
    assert Lease.objects.get(scope="process", key=proc.pk).holder == ""
    assert drive() == 0  # not due: nothing is claimed
    make_due(proc.pk)
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output == {"before": "slept", "after": "woke"}
    types = list(ProcessEvent.objects.filter(process=proc).values_list("type", flat=True))
    assert "process.waiting" in types and "process.resumed" in types


def test_a_failing_definition_ends_failed_with_the_error(workspace, drive):
    proc = _start(workspace, "test.fails")
    drive()
    proc.refresh_from_db()
    assert proc.status == "failed"
    assert proc.error["code"] == "exception" and proc.error["message"] == "boom"


def test_a_parent_starts_and_awaits_a_child(workspace, drive):
    proc = _start(workspace, "test.parent")
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed", proc.error
    child = Process.objects.get(pk=proc.output["child"])
    assert child.parent_id == proc.pk and child.provenance["parent"] == proc.pk
    assert proc.output["result"] == {"status": "completed", "output": {"value": 42}, "error": None}


def test_emit_without_wake_target_is_recorded_and_delivered_nowhere(workspace, drive):
    proc = _start(workspace, "test.emitter")
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed"
    emitted = ProcessEvent.objects.get(process=proc, type="process.emitted")
    assert emitted.data == {"event": "progress", "data": {"pct": 50}}


def test_a_claimed_batch_completes_together_and_a_fenced_entry_is_left_out(workspace, settings):
    from processes_app.engine import Completions, claim_runnable, run_claim

    settings.LASHOPS_PROCESS_GROUP_COMMIT_SECONDS = 60
    for i in range(3):
        _start(workspace, input={"n": i}, process_id=f"g{i}")
    claims = claim_runnable(limit=3)
    completions = Completions()
    for claim in claims:
        assert run_claim(claim, completions=completions) == "queued"
    # Nothing is written before the group: the steps are held back, the rows still running.
    assert set(Process.objects.values_list("status", flat=True)) == {"running"}
    Lease.objects.filter(scope="process", key="g1").update(token=99)  # g1's run is fenced out
    completions.flush()
    status = dict(Process.objects.values_list("pk", "status"))
    assert status == {"g0": "completed", "g1": "running", "g2": "completed"}
    assert Process.objects.get(pk="g2").output == {"value": 4}
    assert Effect.objects.filter(scope="process:g2", kind="process.step").count() == 1
    assert not Effect.objects.filter(scope="process:g1").exists()
    assert Lease.objects.get(scope="process", key="g0").holder == ""


def test_start_many_starts_a_batch_in_one_transaction_and_is_idempotent_per_id(
    workspace, drive, settings, django_capture_on_commit_callbacks
):
    from unittest import mock

    from lashops.core.models import Event
    from processes_app.services import ProcessStartSpec, process_start_many

    settings.LASHOPS_PROCESS_CLAIM_BATCH = 16
    _start(workspace, input={"n": 0}, process_id="m0")  # already registered, same registration
    specs = [
        ProcessStartSpec(process_id=f"m{i}", definition="test.one_step", input={"n": i}, disposition="rerunnable")
        for i in range(40)
    ]
    with (
        mock.patch("lashops.core.runner.dispatch") as sent,
        django_capture_on_commit_callbacks(execute=True),
    ):
        started = process_start_many(workspace=workspace, processes=[*specs, specs[3]])
    assert [p.pk for p, _ in started] == [*(f"m{i}" for i in range(40)), "m3"]
    assert [created for _, created in started] == [False, *[True] * 39, False]
    batches = [call.kwargs["process_ids"] for call in sent.call_args_list]
    sent_ids = [pid for batch in batches for pid in batch]  # (may include ids this test connection left)
    assert {f"m{i}" for i in range(1, 40)} <= set(sent_ids)
    assert len(batches) == -(-len(sent_ids) // 16)  # one drive per claim batch, not one per process
    assert Event.objects.filter(type="process.created").count() == 40
    assert ProcessEvent.objects.filter(type="process.created", process_id="m5").count() == 1

    again = process_start_many(workspace=workspace, processes=specs[:5])
    assert [created for _, created in again] == [False] * 5
    changed = ProcessStartSpec(process_id="m1", definition="test.one_step", input={"n": 99}, disposition="rerunnable")
    fresh = ProcessStartSpec(process_id="m-new", definition="test.one_step", input={"n": 1}, disposition="rerunnable")
    with pytest.raises(Conflict) as exc:
        process_start_many(workspace=workspace, processes=[fresh, changed])
    assert exc.value.code == "registration_conflict" and exc.value.details == {"process_ids": ["m1"]}
    assert not Process.objects.filter(pk="m-new").exists()  # all or nothing

    drive()
    assert set(Process.objects.values_list("status", flat=True)) == {"completed"}
    assert Process.objects.get(pk="m7").output == {"value": 14}


def test_a_cancel_stops_a_queued_run_before_its_first_step(workspace, settings):
    from processes_app.engine import CancelWatch, Completions, claim_runnable, run_claim
    from processes_app.services import process_cancel

    settings.LASHOPS_PROCESS_GROUP_COMMIT_SECONDS = 0  # the batch's cancel read is always stale
    for i in range(3):
        _start(workspace, input={"n": i}, process_id=f"q{i}")
    claims = claim_runnable(limit=3)
    cancels = CancelWatch([c.process_id for c in claims])
    completions = Completions()
    assert run_claim(claims[0], completions=completions, cancels=cancels) == "queued"
    process_cancel(workspace=workspace, process_id="q1")  # q1 is claimed and waits its turn
    assert run_claim(claims[1], completions=completions, cancels=cancels) == "cancelled"
    assert run_claim(claims[2], completions=completions, cancels=cancels) == "queued"
    completions.flush()
    status = dict(Process.objects.values_list("pk", "status"))
    assert status == {"q0": "completed", "q1": "cancelled", "q2": "completed"}
    assert not ProcessEvent.objects.filter(process_id="q1", type="process.step_completed").exists()
