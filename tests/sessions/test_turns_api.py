"""Sessions and turns through the API (the embedded default: in-process runner, scripted model)."""

import pytest

from lashops.core.models import Effect, Event
from sessions_app.models import Node, PendingInput, Session, Turn
from tests.support.polling import wait_until
from tests.support.scripted import ANSWER, CALC, scripted

pytestmark = pytest.mark.django_db(transaction=True)


def _open(api, session_id="s1", model=None, **extra):
    body = {"id": session_id, "model": model or scripted(CALC, ANSWER), **extra}
    return api.post("/api/sessions", data=body, content_type="application/json")


def _turn(api, text="What is 6*7?", session_id="s1", **extra):
    return api.post(f"/api/sessions/{session_id}/turns", data={"input": text, **extra}, content_type="application/json")


def test_open_is_idempotent_by_id(api):
    first = _open(api)
    again = _open(api)
    assert (first.status_code, again.status_code) == (201, 200)
    assert Session.objects.count() == 1


def test_open_refuses_unknown_provider_with_field_path(api):
    response = _open(api, model={"provider": "nope", "model": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["path"] == "body.model.provider"


def test_invalid_session_id_is_422(api):
    assert _open(api, session_id="has space").status_code == 422


def test_sync_turn_runs_a_tool_and_commits_the_transcript(api):
    _open(api)
    response = _turn(api)
    assert response.status_code == 200
    turn = response.json()
    assert (turn["status"], turn["outcome"], turn["final_text"]) == ("committed", "finished", "It is 42.")
    transcript = api.get("/api/sessions/s1/transcript").json()
    kinds = [n["kind"] for n in transcript["nodes"]]
    assert kinds == ["user", "assistant", "tool_call", "tool_result", "assistant"]
    assert transcript["nodes"][3]["payload"]["content"] == "42"
    assert transcript["head_revision"] == 1
    session = api.get("/api/sessions/s1").json()
    assert session["active_turn_id"] == "" and session["output_tokens"] >= 20


def test_turn_events_are_durable_and_ordered(api):
    _open(api)
    _turn(api)
    types = [e["type"] for e in api.get("/api/sessions/s1/events").json()["events"]]
    assert types[0] == "session.opened"
    assert types.index("turn.started") < types.index("tool_call.started") < types.index("tool_call.completed")
    assert types[-1] == "turn.committed"


def test_second_turn_continues_the_conversation(api):
    _open(api, model=scripted({"text": "one"}, {"text": "two"}))
    _turn(api, "first")
    second = _turn(api, "second").json()
    assert second["final_text"] == "two" and second["index"] == 2
    assert len(api.get("/api/sessions/s1/transcript").json()["nodes"]) == 4


def test_source_key_makes_turns_idempotent_and_conflicts_on_changed_input(api):
    _open(api, model=scripted({"text": "once"}))
    first = _turn(api, "hi", source_key="k1").json()
    again = _turn(api, "hi", source_key="k1").json()
    assert first["id"] == again["id"] and Turn.objects.count() == 1
    changed = _turn(api, "other", source_key="k1")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"


def test_oversized_input_is_422_and_writes_nothing(api, settings):
    _open(api)
    settings.LASHOPS_MAX_INPUT_CHARS = 50
    events_before = Event.objects.count()
    response = _turn(api, "x" * 51)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert Turn.objects.count() == 0 and Event.objects.count() == events_before


def test_empty_input_is_422(api):
    _open(api)
    assert _turn(api, "   ").status_code == 422


def test_busy_session_answers_409_session_execution_busy(api):
    _open(api)
    Session.objects.filter(pk="s1").update(active_turn_id="someone-else")
    response = _turn(api)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_execution_busy"


def test_background_turn_answers_202_and_the_runner_commits_it(api):
    _open(api)
    response = _turn(api, background=True)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    turn_id = response.json()["id"]
    wait_until(lambda: Turn.objects.get(pk=turn_id).status == "committed")
    assert api.get(f"/api/sessions/s1/turns/{turn_id}").json()["final_text"] == "It is 42."


def test_invalid_tool_arguments_go_back_to_the_model(api):
    bad = {"tool_calls": [{"name": "calculator", "arguments": {"wrong": 1}}]}
    _open(api, model=scripted(bad, {"text": "sorry"}))
    turn = _turn(api).json()
    assert turn["outcome"] == "finished"
    result = next(n for n in api.get("/api/sessions/s1/transcript").json()["nodes"] if n["kind"] == "tool_result")
    assert result["payload"]["is_error"] is True


def test_unknown_tool_goes_back_to_the_model(api):
    _open(api, model=scripted({"tool_calls": [{"name": "no_such_tool", "arguments": {}}]}, {"text": "ok"}))
    assert _turn(api).json()["outcome"] == "finished"
    result = Node.objects.get(kind="tool_result")
    assert result.payload["is_error"] and "no_such_tool" in result.payload["content"]


def test_provider_500_then_success_is_retried_once(api, settings):
    settings.LASHOPS_PROVIDER_RETRY_BASE_DELAY = 0.01
    _open(api, model=scripted({"text": "fine", "fail": [{"status": 500, "message": "boom"}]}))
    turn = _turn(api).json()
    assert (turn["outcome"], turn["final_text"]) == ("finished", "fine")
    kinds = list(Effect.objects.filter(kind="llm_call").values_list("replay_key", flat=True))
    assert any(k.endswith("attempt-1") for k in kinds)  # the failed attempt is journaled


def test_provider_that_never_answers_stops_with_provider_error(api, settings):
    settings.LASHOPS_PROVIDER_RETRY_BASE_DELAY = 0.01
    settings.LASHOPS_PROVIDER_MAX_ATTEMPTS = 2
    _open(api, model=scripted({"text": "late", "delay": 5}, timeout=0.2))
    turn = _turn(api).json()
    assert (turn["outcome"], turn["stop_reason"]) == ("stopped", "provider_error")
    assert turn["final_text"] == ""
    assert not Node.objects.filter(kind="assistant").exists()


def test_cancel_stops_a_running_turn_with_no_partial_text(api):
    _open(api, model=scripted({"text": "a long answer " * 50, "delay": 3}))
    turn_id = _turn(api, background=True).json()["id"]
    wait_until(lambda: Turn.objects.get(pk=turn_id).status == "running")
    assert api.post(f"/api/sessions/s1/turns/{turn_id}/cancel").status_code == 202
    turn = wait_until(lambda: Turn.objects.filter(pk=turn_id, status="committed").first())
    assert (turn.outcome, turn.stop_reason, turn.final_text) == ("stopped", "cancelled", "")
    assert not Node.objects.filter(kind="assistant").exists()


def test_cancel_after_commit_is_409(api):
    _open(api, model=scripted({"text": "done"}))
    turn_id = _turn(api).json()["id"]
    response = api.post(f"/api/sessions/s1/turns/{turn_id}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "turn_already_committed"


def test_input_posted_to_an_idle_session_starts_a_turn(api):
    _open(api, model=scripted({"text": "got it"}))
    response = api.post(
        "/api/sessions/s1/inputs", data={"text": "hello", "source_key": "m1"}, content_type="application/json"
    )
    assert response.status_code == 202
    turn = wait_until(lambda: Turn.objects.filter(status="committed").first())
    assert turn.input_text == "hello"
    assert PendingInput.objects.get(source_key="m1").status == "accepted"


def test_input_during_the_last_step_is_deferred_to_the_next_turn_exactly_once(api):
    _open(api, model=scripted({"text": "first answer", "delay": 1}, {"text": "second answer"}))
    turn_id = _turn(api, background=True).json()["id"]
    wait_until(lambda: Turn.objects.get(pk=turn_id).status == "running")
    for _ in range(2):  # the same source key twice: queued once
        api.post(
            "/api/sessions/s1/inputs", data={"text": "and then?", "source_key": "late"}, content_type="application/json"
        )
    wait_until(lambda: Turn.objects.filter(status="committed").count() == 2)
    second = Turn.objects.get(index=2)
    assert second.input_text == "and then?" and second.final_text == "second answer"
    assert Node.objects.filter(kind="user", payload__text="and then?").count() == 1


def test_input_queued_during_a_tool_is_taken_at_the_next_step_boundary(api):
    slow_tool = {"tool_calls": [{"name": "sleep", "arguments": {"seconds": 1}}]}
    _open(api, model=scripted(slow_tool, {"text": "done"}))
    turn_id = _turn(api, background=True).json()["id"]
    wait_until(lambda: Effect.objects.filter(kind="llm_call").exists())
    api.post("/api/sessions/s1/inputs", data={"text": "also this", "source_key": "b1"}, content_type="application/json")
    wait_until(lambda: Turn.objects.get(pk=turn_id).status == "committed")
    assert PendingInput.objects.get(source_key="b1").accepted_by == turn_id
    assert Node.objects.get(kind="user", payload__text="also this").payload.get("boundary") is True
    assert Turn.objects.count() == 1


def test_pending_input_can_be_cancelled(api):
    _open(api)
    Session.objects.filter(pk="s1").update(active_turn_id="busy")
    api.post(
        "/api/sessions/s1/inputs", data={"text": "never mind", "source_key": "c1"}, content_type="application/json"
    )
    response = api.delete("/api/sessions/s1/inputs/c1")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_cancelling_input_that_was_never_queued_is_a_404(api):
    _open(api)
    response = api.delete("/api/sessions/s1/inputs/never-queued")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_commands_are_idempotent_and_reset_clears_the_transcript(api):
    _open(api, model=scripted({"text": "hi"}))
    _turn(api)
    body = {"kind": "reset_session", "source_key": "r1"}
    first = api.post("/api/sessions/s1/commands", data=body, content_type="application/json").json()
    again = api.post("/api/sessions/s1/commands", data=body, content_type="application/json").json()
    assert first["id"] == again["id"] and first["status"] == "applied"
    assert api.get("/api/sessions/s1/transcript").json()["nodes"] == []
    refresh = {"kind": "refresh_tool_catalog", "source_key": "t1"}
    api.post("/api/sessions/s1/commands", data=refresh, content_type="application/json")
    assert api.get("/api/sessions/s1").json()["tool_catalog_generation"] == 1


def test_unknown_command_is_422(api):
    _open(api)
    response = api.post(
        "/api/sessions/s1/commands", data={"kind": "explode", "source_key": "x"}, content_type="application/json"
    )
    assert response.status_code == 422


def test_spawn_agent_runs_a_child_session_and_rolls_up_its_usage(api):
    spawn = {"tool_calls": [{"name": "spawn_agent", "arguments": {"task": "say hi"}}]}
    _open(api, model=scripted(spawn, {"text": "child said hi", "usage": {"input_tokens": 5, "output_tokens": 5}}))
    turn = _turn(api).json()
    assert turn["outcome"] == "finished"
    child = Session.objects.get(parent_id="s1")
    assert child.depth == 1 and child.turns.count() == 1
    assert turn["child_output_tokens"] > 0
    usage = api.get("/api/sessions/s1/usage").json()
    assert (
        usage["total_usage"]["output_tokens"] == usage["usage"]["output_tokens"] + usage["child_usage"]["output_tokens"]
    )


def test_other_workspaces_session_is_404(api, other_workspace):
    from sessions_app.services import session_open

    session_open(workspace=other_workspace, session_id="theirs")
    assert api.get("/api/sessions/theirs").status_code == 404
    assert _turn(api, session_id="theirs").status_code == 404
    assert api.delete("/api/sessions/theirs").status_code == 404


def test_delete_returns_a_report(api):
    _open(api)
    _turn(api)
    report = api.delete("/api/sessions/s1").json()
    assert report["turns"] == 1 and report["nodes"] == 5 and report["effects"] >= 2
    assert api.get("/api/sessions/s1").status_code == 404


def test_session_tool_allow_list_limits_the_catalog(api):
    model = scripted({"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}, {"text": "ok"})
    _open(api, model=model, metadata={"tools": ["clock"]})
    assert _turn(api).json()["outcome"] == "finished"
    result = Node.objects.get(kind="tool_result")
    assert result.payload["is_error"] is True  # calculator is not a member of this session's catalog


def test_park_then_reopen_preserves_the_transcript_and_closed_refuses_turns(api):
    model = scripted({"text": "one"}, {"text": "two"})
    _open(api, model=model)
    _turn(api, "first")
    parked = api.patch("/api/sessions/s1", data={"status": "parked"}, content_type="application/json")
    assert parked.json()["status"] == "parked"
    assert _turn(api, "while parked").json()["error"]["code"] == "session_closed"
    assert _open(api, model=model).json()["status"] == "open"  # opening a parked session resumes it
    assert _turn(api, "second").json()["final_text"] == "two"
    api.patch("/api/sessions/s1", data={"status": "closed"}, content_type="application/json")
    assert _turn(api, "late").status_code == 409


def test_park_while_a_turn_runs_is_409(api):
    _open(api)
    Session.objects.filter(pk="s1").update(active_turn_id="running")
    response = api.patch("/api/sessions/s1", data={"status": "parked"}, content_type="application/json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "session_execution_busy"


def test_capability_flags_narrow_the_catalog_like_a_mob_profile(api):
    calc = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    _open(api, model=scripted(calc, {"text": "ok"}), metadata={"tools": {"builtins": False, "comms": True}})
    _turn(api)
    assert Node.objects.get(kind="tool_result").payload["is_error"] is True


def test_mob_member_tools_are_hidden_from_sessions_outside_a_mob(api):
    peers = {"tool_calls": [{"name": "mob_peers", "arguments": {}}]}
    _open(api, model=scripted(peers, {"text": "ok"}))
    _turn(api)
    result = Node.objects.get(kind="tool_result").payload
    assert result["is_error"] is True and "mob_peers" in result["content"]
