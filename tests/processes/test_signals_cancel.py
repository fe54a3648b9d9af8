"""Signals (validated, queued, consumed in order, never lost) and cancellation."""

import pytest

from lashops.core.errors import Conflict, InvalidInput
from processes_app.models import Process, ProcessEvent
from processes_app.services import process_cancel, process_signal, process_start

pytestmark = pytest.mark.django_db


def _start(workspace, definition, input=None, **kw):
    proc, _ = process_start(
        workspace=workspace, definition=definition, input=input or {}, disposition="rerunnable", **kw
    )
    return proc


def test_a_signal_sent_before_the_wait_is_delivered(workspace, drive):
    proc = _start(workspace, "test.signals")
    process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 7})
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output == {"got": [{"n": 7}]}


def test_repeated_waits_consume_signals_in_order_and_a_parked_waiter_wakes(workspace, drive):
    proc = _start(workspace, "test.signals", {"count": 3})
    process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 1})
    drive()
    proc.refresh_from_db()
    assert proc.wait_kind == "signal" and proc.wait_signal == "go"
    process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 2})
    proc.refresh_from_db()
    assert proc.wait_kind == ""  # woken
    process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 3})
    drive()
    proc.refresh_from_db()
    assert proc.output == {"got": [{"n": 1}, {"n": 2}, {"n": 3}]}


def test_signals_are_validated_against_the_declaration(workspace):
    proc = _start(workspace, "test.signals")
    with pytest.raises(InvalidInput) as unknown:
        process_signal(workspace=workspace, process_id=proc.pk, name="nope", payload={})
    assert unknown.value.code == "unknown_signal"
    with pytest.raises(InvalidInput) as bad:
        process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": "x"})
    assert bad.value.code == "invalid_signal_payload"


def test_signalling_a_finished_process_is_a_conflict(workspace, drive):
    proc = _start(workspace, "test.one_step")
    drive()
    with pytest.raises(Conflict) as exc:
        process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 1})
    assert exc.value.status == 409 and exc.value.code == "process_finished"


def test_signalling_a_finished_signal_process_is_409(workspace, drive):
    proc = _start(workspace, "test.signals")
    process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 1})
    drive()
    with pytest.raises(Conflict) as exc:
        process_signal(workspace=workspace, process_id=proc.pk, name="go", payload={"n": 2})
    assert exc.value.code == "process_finished"


def test_a_signal_wait_times_out_with_none(workspace, drive, make_due):
    proc = _start(workspace, "test.signals", {"timeout": 60})
    drive()
    make_due(proc.pk)
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output == {"got": [None]}


def test_cancelling_a_parked_process_ends_it_at_once(workspace, drive):
    proc = _start(workspace, "test.sleeper", {"seconds": 60})
    drive()
    process_cancel(workspace=workspace, process_id=proc.pk)
    proc.refresh_from_db()
    assert proc.status == "cancelled"
    types = list(ProcessEvent.objects.filter(process=proc).values_list("type", flat=True))
    assert types[-2:] == ["process.cancel_requested", "process.cancelled"]
    with pytest.raises(Conflict):
        process_cancel(workspace=workspace, process_id=proc.pk)


def test_a_running_process_stops_at_its_next_step_boundary(workspace, drive, tmp_path):
    from processes_app.context import ProcessContext
    from processes_app.definitions import process_definition

    log = tmp_path / "log"

    @process_definition("test.self_cancel")
    def self_cancel(ctx: ProcessContext, input: dict) -> None:
        def first() -> int:
            process_cancel(workspace=ctx.workspace, process_id=ctx.process_id)  # while it holds the lease
            log.write_text("first\n")
            return 1

        ctx.step("first", first)
        ctx.step("second", lambda: log.write_text("second\n"))

    proc = _start(workspace, "test.self_cancel")
    drive()
    proc.refresh_from_db()
    assert proc.status == "cancelled"
    assert log.read_text() == "first\n"  # the second step never ran
    steps = ProcessEvent.objects.filter(process=proc, type="process.step_completed").count()
    assert steps == 1


def test_cancel_can_cascade_to_children(workspace, drive):
    proc = _start(workspace, "test.parent", {"child": "test.sleeper", "child_input": {"seconds": 60}})
    drive()
    child = Process.objects.get(parent=proc)
    assert child.wait_kind == "timer"
    process_cancel(workspace=workspace, process_id=proc.pk, cascade=True)
    child.refresh_from_db()
    proc.refresh_from_db()
    assert proc.status == "cancelled" and child.status == "cancelled"
