"""Process tools a session's model calls: start, status, signal, cancel (processes_app.agent_tools)."""

from __future__ import annotations

import pytest

from lashops.runtime.tools import ToolContext
from processes_app.agent_tools import process_tools
from processes_app.models import Process, ProcessEvent, ProcessGrant
from sessions_app.models import Node
from sessions_app.services import session_open, turn_start
from tests.support.scripted import scripted

pytestmark = pytest.mark.django_db


def _call(name: str, arguments: dict) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def _results(session) -> list[dict]:
    return [n.payload for n in Node.objects.filter(session=session, kind="tool_result").order_by("seq")]


def _tool(name: str):
    return next(t for t in process_tools() if t.name == name)


def _ctx(workspace, session_id: str = "s1", key: str = "turn:s1:t1/0/tool_attempt/call_1") -> ToolContext:
    return ToolContext(
        session_id=session_id,
        turn_id="t1",
        call_id="call_1",
        idempotency_key=key,
        journal=None,
        host={"workspace_id": workspace.pk},
    )


def test_a_session_turn_starts_a_process_and_a_later_turn_reads_its_status(workspace, drive):
    session, _ = session_open(
        workspace=workspace,
        session_id="s1",
        model=scripted(
            _call("process_start", {"definition": "test.one_step", "input": {"n": 21}, "id": "from-tool"}),
            {"text": "Started."},
            _call("process_status", {"process_id": "from-tool"}),
            {"text": "It finished."},
        ),
    )
    turn_start(session=session, text="start the job")
    proc = Process.objects.get(pk="from-tool")
    assert proc.provenance["session"] == "s1"
    assert ProcessGrant.objects.filter(process=proc, session_id="s1", revoked_at__isnull=True).exists()

    drive()
    turn = turn_start(session=session, text="how is it going?")

    assert turn.final_text == "It finished."
    started, status = _results(session)
    assert not started["is_error"] and "started process from-tool" in started["content"]
    assert not status["is_error"] and status["content"] == "process from-tool: completed; output {'value': 42}"


def test_re_running_the_start_call_after_a_crash_starts_no_second_process(workspace):
    start = _tool("process_start")
    first = start.handler({"definition": "test.one_step"}, _ctx(workspace))
    again = start.handler({"definition": "test.one_step"}, _ctx(workspace))
    assert not first.is_error and not again.is_error
    assert first.data["id"] == again.data["id"]
    assert "already started" in again.content
    assert Process.objects.count() == 1


def test_a_session_without_a_grant_cannot_see_signal_or_cancel_a_process(workspace):
    started = _tool("process_start").handler({"definition": "test.signals", "input": {}}, _ctx(workspace))
    pid = started.data["id"]
    other = _ctx(workspace, session_id="s2", key="turn:s2:t1/0/tool_attempt/call_1")
    for name, args in [
        ("process_status", {"process_id": pid}),
        ("process_signal", {"process_id": pid, "name": "go", "payload": {"n": 1}}),
        ("process_cancel", {"process_id": pid}),
    ]:
        out = _tool(name).handler(args, other)
        assert out.is_error and out.content.startswith("not_found"), name
    assert Process.objects.get(pk=pid).cancel_requested_at is None
    assert not ProcessEvent.objects.filter(process_id=pid, type="signal.go").exists()


def test_a_re_run_signal_call_queues_the_signal_once(workspace):
    pid = _tool("process_start").handler({"definition": "test.signals"}, _ctx(workspace)).data["id"]
    ctx = _ctx(workspace, key="turn:s1:t2/0/tool_attempt/call_9")
    signal = _tool("process_signal")
    first = signal.handler({"process_id": pid, "name": "go", "payload": {"n": 1}}, ctx)
    again = signal.handler({"process_id": pid, "name": "go", "payload": {"n": 1}}, ctx)
    assert not first.is_error and first.data == again.data
    assert ProcessEvent.objects.filter(process_id=pid, type="signal.go").count() == 1
    bad = signal.handler({"process_id": pid, "name": "nope"}, _ctx(workspace, key="k2"))
    assert bad.is_error and bad.content.startswith("unknown_signal")


def test_cancelling_a_held_process_ends_a_parked_one_and_a_second_cancel_reports_it(workspace, drive):
    pid = _tool("process_start").handler({"definition": "test.signals"}, _ctx(workspace)).data["id"]
    drive()  # parks on the signal wait
    cancel = _tool("process_cancel")
    first = cancel.handler({"process_id": pid, "reason": "no longer needed"}, _ctx(workspace))
    again = cancel.handler({"process_id": pid}, _ctx(workspace))
    assert first.data["status"] == "cancelled" and again.data["status"] == "cancelled"
    assert not again.is_error


def test_the_tools_are_offered_only_with_a_workspace_host(workspace):
    tool = _tool("process_start")
    assert tool.is_available({"workspace_id": workspace.pk}, 0)
    assert not tool.is_available({}, 0)
