"""The turn machine: the loop, stops, retries, cancellation, events and nodes."""

from __future__ import annotations

import pytest

from lashops.runtime.interfaces import LeaseLost
from lashops.runtime.nodes import NodeDraft, transcript_to_messages
from lashops.runtime.tools import Tool, ToolCatalog, ToolFailure

from .helpers import Harness

DEMO_TOOLS = [
    {
        "text": "Working.",
        "tool_calls": [
            {"name": "calculator", "arguments": {"expression": "6 * 7"}},
            {"name": "clock", "arguments": {}},
        ],
    },
    {"text": "The answer is 42."},
]


def test_plain_answer_finishes_with_user_and_assistant_nodes(harness: Harness) -> None:
    result = harness.run(harness.config(), "hello there")
    assert result.outcome == "finished" and result.stop_reason is None
    assert result.final_text == "You said: hello there"
    assert [n.kind for n in result.nodes] == ["user", "assistant"]
    assert [n.id for n in result.nodes] == ["t1:0", "t1:1"]
    assert result.nodes[1].parent_id == "t1:0" and result.nodes[1].caused_by == "t1:0"
    assert result.usage.input_tokens > 0 and result.usage == result.total_usage
    assert [c["model"] for c in result.llm_calls] == ["scripted-1"]


def test_tool_loop_runs_several_tools_and_feeds_results_back(harness: Harness) -> None:
    result = harness.run(harness.config(DEMO_TOOLS), "what is 6*7?")
    assert result.outcome == "finished" and result.final_text == "The answer is 42."
    kinds = [n.kind for n in result.nodes]
    assert kinds == ["user", "assistant", "tool_call", "tool_call", "tool_result", "tool_result", "assistant"]
    results = [n.payload for n in result.nodes if n.kind == "tool_result"]
    assert results[0]["content"] == "42" and results[0]["is_error"] is False
    assert results[1]["content"].endswith("+00:00")
    tool_call = next(n for n in result.nodes if n.kind == "tool_call")
    assert next(n for n in result.nodes if n.kind == "tool_result").caused_by == tool_call.id
    assert len(result.llm_calls) == 2 and result.steps == 2
    assert result.usage.output_tokens == sum(c["usage"]["output_tokens"] for c in result.llm_calls)


def test_prompt_holds_system_prompt_plugin_layers_and_tools(harness: Harness) -> None:
    seen = []

    class Spy:
        name = "spy"

        def complete(self, request, *, on_text_delta):
            seen.append(request)
            return harness.provider.complete(request, on_text_delta=on_text_delta)

    config = harness.config(prompt_layers=("Layer two.",))
    harness.run(config, "hi", provider=Spy())
    system = seen[0].messages[0]
    assert system.role == "system" and system.content == "You are helpful.\n\nLayer two."
    assert {t.name for t in seen[0].tools} == {"calculator", "clock", "sleep"}


def test_invalid_json_schema_violation_unknown_tool_and_exception_go_back_to_the_model(harness: Harness) -> None:
    def boom(args, ctx):
        raise RuntimeError("kaput")

    harness.catalog.add(Tool(name="boom", description="raises", handler=boom))
    script = [
        {
            "tool_calls": [
                {"name": "calculator", "arguments": "{not json"},
                {"name": "calculator", "arguments": {"expr": "1"}},
                {"name": "nope", "arguments": {}},
                {"name": "boom", "arguments": {}},
            ]
        },
        {"text": "recovered"},
    ]
    result = harness.run(harness.config(script))
    assert result.outcome == "finished" and result.final_text == "recovered"
    errors = [n.payload for n in result.nodes if n.kind == "tool_result"]
    assert all(e["is_error"] for e in errors)
    assert "invalid JSON" in errors[0]["content"]
    assert "invalid arguments" in errors[1]["content"]
    assert "unknown tool 'nope'" in errors[2]["content"]
    assert "RuntimeError: kaput" in errors[3]["content"]


def test_transient_errors_are_retried_and_failed_attempt_text_is_retracted(harness: Harness) -> None:
    script = [{"text": "fine", "fail": [{"status": 503}, {"timeout": True}], "fail_after_text": "oops "}]
    result = harness.run(harness.config(script))
    assert result.outcome == "finished" and result.final_text == "fine"
    assert [c["attempt"] for c in result.llm_calls] == [3]
    resets = harness.events.of_type("model.attempt_reset")
    assert [r["correlation_id"] for r in resets] == ["t1/0/attempt-1", "t1/0/attempt-2"]
    deltas = harness.events.of_type("text.delta")
    live = "".join(d["text"] for d in deltas if d["correlation_id"] == "t1/0/attempt-3")
    assert live == "fine"
    assert len(harness.journal.keys_of_kind("llm_call")) == 3
    assert len(harness.journal.keys_of_kind("sleep")) == 2


def test_permanent_provider_error_stops_without_retry(harness: Harness) -> None:
    result = harness.run(harness.config([{"fail": [{"status": 401, "message": "bad key"}]}]))
    assert (result.outcome, result.stop_reason, result.stop_detail) == ("stopped", "provider_error", "bad key")
    assert harness.provider.calls == 1
    assert result.final_text == ""
    assert result.nodes[-1].kind == "system" and result.nodes[-1].payload["stop_reason"] == "provider_error"


def test_exhausted_retries_stop_with_provider_error(harness: Harness) -> None:
    result = harness.run(harness.config([{"text": "never", "fail": [{"status": 500}] * 10}]))
    assert result.stop_reason == "provider_error" and "gave up after 4 attempts" in result.stop_detail
    assert harness.provider.calls == 4


def test_cancel_while_streaming_commits_no_partial_text(harness: Harness) -> None:
    def cancel_on_first_delta(type, data, *, durable):
        if type == "text.delta":
            harness.control.cancel()

    events = harness.events

    class Tee:
        def emit(self, type, data, *, durable):
            events.emit(type, data, durable=durable)
            cancel_on_first_delta(type, data, durable=durable)

    result = harness.run(harness.config([{"text": "a long answer", "chunk_size": 2}]), events=Tee())
    assert (result.outcome, result.stop_reason) == ("stopped", "cancelled")
    assert result.final_text == ""
    assert not any(n.kind == "assistant" for n in result.nodes)
    assert not any("long" in str(n.payload) for n in result.nodes)
    assert events.of_type("model.attempt_reset")[0]["reason"] == "cancelled"
    assert harness.journal.keys_of_kind("llm_call") == []


def test_cancel_before_start_makes_no_model_call(harness: Harness) -> None:
    harness.control.cancel()
    result = harness.run(harness.config())
    assert result.stop_reason == "cancelled" and harness.provider.calls == 0


def test_cancel_during_sleep_tool_stops_the_turn(harness: Harness) -> None:
    def cancel_then_sleep(args, ctx):
        harness.control.cancel()
        return "cancel requested"

    harness.catalog.add(Tool(name="cancel_me", description="", handler=cancel_then_sleep))
    script = [
        {"tool_calls": [{"name": "cancel_me", "arguments": {}}, {"name": "sleep", "arguments": {"seconds": 30}}]},
        {"text": "never"},
    ]
    result = harness.run(harness.config(script))
    assert result.stop_reason == "cancelled"
    results = [n.payload for n in result.nodes if n.kind == "tool_result"]
    assert len(results) == 2 and results[1]["is_error"]
    assert harness.provider.calls == 1


@pytest.mark.parametrize(("text", "detail"), [("   ", "empty"), ("x" * 51, "limit is 50")])
def test_empty_or_oversized_input_is_invalid(harness: Harness, text: str, detail: str) -> None:
    result = harness.run(harness.config(max_input_chars=50), text)
    assert result.stop_reason == "invalid_input" and detail in result.stop_detail
    assert harness.provider.calls == 0
    assert [n.kind for n in result.nodes] == ["system"]


def test_max_steps_stops_with_max_turns(harness: Harness) -> None:
    loop = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}] * 5
    result = harness.run(harness.config(loop, max_steps=3))
    assert result.stop_reason == "max_turns" and harness.provider.calls == 3 and result.steps == 3


def test_answer_without_done_is_a_runtime_error_unless_policy_allows_it(harness: Harness) -> None:
    script = [{"text": "cut off", "finish_reason": "length"}]
    strict = harness.run(harness.config(script))
    assert strict.stop_reason == "runtime_error" and "finish_reason=length" in strict.stop_detail
    lenient = Harness().run(harness.config(script, treat_missing_done_as_failure=False))
    assert lenient.outcome == "finished" and lenient.final_text == "cut off"


def test_tool_failure_stops_the_turn_after_the_batch(harness: Harness) -> None:
    def fatal(args, ctx):
        raise ToolFailure("disk on fire")

    harness.catalog.add(Tool(name="fatal", description="", handler=fatal))
    calls = [{"name": "fatal", "arguments": {}}, {"name": "calculator", "arguments": {"expression": "2"}}]
    script = [{"tool_calls": calls}]
    result = harness.run(harness.config(script))
    assert result.stop_reason == "tool_failure" and "disk on fire" in result.stop_detail
    assert [n.payload["content"] for n in result.nodes if n.kind == "tool_result"][1] == "2"


def test_lease_loss_propagates_so_the_host_does_not_commit(harness: Harness) -> None:
    harness.control.lose_lease()
    with pytest.raises(LeaseLost):
        harness.run(harness.config())


def test_plugin_hook_exception_is_a_runtime_error(harness: Harness) -> None:
    from lashops.runtime.plugins import SessionPlugin

    class Broken(SessionPlugin):
        id = "broken"

        def before_turn(self, ctx):
            raise ValueError("bad plugin")

    result = harness.run(harness.config(), plugins=[Broken()])
    assert result.stop_reason == "runtime_error" and "bad plugin" in result.stop_detail


def test_boundary_inputs_are_injected_at_the_next_step_and_journaled(harness: Harness) -> None:
    def queue_input(args, ctx):
        harness.control.queue_input("also, say hi")
        return "queued"

    harness.catalog.add(Tool(name="queue", description="", handler=queue_input))
    script = [{"tool_calls": [{"name": "queue", "arguments": {}}]}]
    result = harness.run(harness.config(script))
    assert result.accepted_inputs == ("also, say hi",)
    injected = [n for n in result.nodes if n.kind == "user" and n.payload.get("boundary")]
    assert [n.payload["text"] for n in injected] == ["also, say hi"]
    assert result.final_text == "You said: also, say hi"
    assert harness.events.of_type("input.accepted")[0]["inputs"] == ["also, say hi"]
    assert harness.journal.keys_of_kind("inputs") == ["turn:s1:t1/1/inputs/boundary"]


def test_event_sequence_and_lanes(harness: Harness) -> None:
    harness.run(harness.config(DEMO_TOOLS))
    durable = [t for t, _ in harness.events.durable()]
    assert durable == [
        "turn.started",
        "tool_call.started",
        "tool_call.started",
        "tool_call.completed",
        "tool_call.completed",
        "turn.finished",
    ]
    live_types = {t for t, _, d in harness.events.events if not d}
    assert {"model.request_started", "text.delta", "usage"} <= live_types
    delta = harness.events.of_type("text.delta")[0]
    assert {"step", "attempt", "correlation_id", "text"} <= set(delta)


def test_nodes_round_trip_into_the_next_turn(harness: Harness) -> None:
    first = harness.run(harness.config(DEMO_TOOLS), "first")
    stored = [n.to_dict() for n in first.nodes]
    messages = transcript_to_messages(stored)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c.name for c in messages[1].tool_calls] == ["calculator", "clock"]
    second = harness.run(harness.config(DEMO_TOOLS, turn_id="t2"), "second", transcript=stored)
    assert second.nodes[0].parent_id == first.nodes[-1].id
    assert second.final_text == "You said: second"  # the script is exhausted after two assistant messages


def test_transcript_to_messages_skips_evidence_and_accepts_drafts() -> None:
    nodes = [
        NodeDraft("a:0", "user", None, None, {"text": "hi"}),
        NodeDraft("a:1", "tool_call", "a:0", None, {"call_id": "c", "name": "clock", "arguments": "{}"}),
        NodeDraft("a:2", "tool_result", "a:1", "a:1", {"call_id": "c", "name": "clock", "content": "now"}),
        NodeDraft("a:3", "system", "a:2", None, {"event": "turn.stopped"}),
        NodeDraft("a:4", "plugin", "a:3", None, {"x": 1}),
    ]
    messages = transcript_to_messages(nodes)
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls[0].id == "c" and messages[2].tool_call_id == "c"


def test_concurrent_safe_tools_run_in_parallel(harness: Harness) -> None:
    import threading

    barrier = threading.Barrier(2, timeout=2)

    def meet(args, ctx):
        barrier.wait()  # deadlocks (and times out) unless both calls run at once
        return "met"

    harness.catalog.add(Tool(name="meet", description="", handler=meet, concurrent_safe=True))
    script = [{"tool_calls": [{"name": "meet", "arguments": {}}, {"name": "meet", "arguments": {}}]}, {"text": "ok"}]
    result = harness.run(harness.config(script))
    assert [n.payload["content"] for n in result.nodes if n.kind == "tool_result"] == ["met", "met"]


def test_unsafe_tools_run_one_at_a_time_in_call_order(harness: Harness) -> None:
    order: list[str] = []

    def record(args, ctx):
        order.append(ctx.call_id)
        return "ok"

    harness.catalog.add(Tool(name="rec", description="", handler=record, concurrent_safe=False))
    script = [{"tool_calls": [{"name": "rec", "arguments": {}}] * 3}, {"text": "ok"}]
    harness.run(harness.config(script))
    assert order == ["call_0_0", "call_0_1", "call_0_2"]


def test_catalog_generation_is_reported(harness: Harness) -> None:
    catalog = ToolCatalog([])
    catalog.refresh()
    catalog.refresh()
    assert harness.run(harness.config(), catalog=catalog).catalog_generation == 2
