"""Durability: a re-driven turn replays journaled effects and produces an identical result."""

from __future__ import annotations

import time

import pytest

from lashops.runtime.interfaces import replay_key
from lashops.runtime.memory import MemoryControl, RecordingEvents
from lashops.runtime.providers.scripted import ScriptedProvider
from lashops.runtime.tools import Tool

from .helpers import CrashingProvider, ExplodingProvider, Harness, SimulatedCrash

SCRIPT = [
    {"text": "step one", "tool_calls": [{"name": "count", "arguments": {}}, {"name": "clock", "arguments": {}}]},
    {"text": "step two", "tool_calls": [{"name": "count", "arguments": {}}], "fail": [{"status": 502}]},
    {"text": "all done"},
]


def _with_counter(harness: Harness) -> list[str]:
    runs: list[str] = []

    def count(args, ctx):
        runs.append(ctx.call_id)
        return f"run {ctx.call_id}"

    harness.catalog.add(Tool(name="count", description="counts its runs", handler=count))
    return runs


def test_redrive_with_full_journal_calls_nothing_and_returns_identical_result(harness: Harness) -> None:
    runs = _with_counter(harness)
    first = harness.run(harness.config(SCRIPT))
    assert first.outcome == "finished" and len(runs) == 2

    events = RecordingEvents()
    again = harness.run(harness.config(SCRIPT), provider=ExplodingProvider(), events=events)
    assert again == first
    assert again.digest() == first.digest()
    assert len(runs) == 2  # no tool re-ran
    assert events.durable() == harness.events.durable()


def test_replay_does_not_restream_recorded_text(harness: Harness) -> None:
    first = harness.run(harness.config(SCRIPT[2:]))
    events = RecordingEvents()
    harness.run(harness.config(SCRIPT[2:]), provider=ExplodingProvider(), events=events)
    assert first.final_text == "all done"
    assert events.of_type("text.delta") == [] and events.of_type("model.request_started") == []


def test_crash_after_some_effects_redrives_each_effect_once(harness: Harness) -> None:
    runs = _with_counter(harness)
    crashing = CrashingProvider(crash_on_call=2)  # step 0 answered and its tools ran, then the worker dies
    with pytest.raises(SimulatedCrash):
        harness.run(harness.config(SCRIPT), provider=crashing)
    assert crashing.inner.calls == 1 and len(runs) == 1

    resumed_provider = ScriptedProvider()
    resumed = harness.run(harness.config(SCRIPT), provider=resumed_provider, events=RecordingEvents())

    reference = Harness()
    reference_runs = _with_counter(reference)
    uninterrupted = reference.run(reference.config(SCRIPT))

    assert resumed == uninterrupted
    assert crashing.inner.calls + resumed_provider.calls == reference.provider.calls == 4  # incl. one failed attempt
    assert len(runs) == len(reference_runs) == 2
    assert runs == ["call_0_0", "call_1_0"]


def test_crash_inside_a_tool_batch_reruns_only_the_unrecorded_call(harness: Harness) -> None:
    runs = _with_counter(harness)
    crash = {"armed": True}

    def fragile(args, ctx):
        if crash["armed"]:
            crash["armed"] = False
            raise SimulatedCrash("worker killed mid-tool")
        return "fragile ok"

    harness.catalog.add(Tool(name="fragile", description="", handler=fragile))
    calls = [{"name": "count", "arguments": {}}, {"name": "fragile", "arguments": {}}]
    script = [{"tool_calls": calls}, {"text": "ok"}]
    with pytest.raises(SimulatedCrash):
        harness.run(harness.config(script))
    result = harness.run(harness.config(script), provider=ScriptedProvider())
    assert result.outcome == "finished"
    assert runs == ["call_0_0"]
    assert [n.payload["content"] for n in result.nodes if n.kind == "tool_result"] == ["run call_0_0", "fragile ok"]


def test_failed_attempts_are_journaled_and_not_resent_on_replay(harness: Harness) -> None:
    script = [{"text": "eventually", "fail": [{"status": 500}, {"status": 500}]}]
    first = harness.run(harness.config(script))
    assert harness.provider.calls == 3
    failed = harness.journal.lookup(replay_key("s1", "t1", 0, "llm_call", "attempt-1"))
    assert failed is not None and failed["ok"] is False and failed["transient"] is True
    assert harness.run(harness.config(script), provider=ExplodingProvider()) == first


def test_changed_prompt_on_replay_is_an_explicit_divergence(harness: Harness) -> None:
    harness.run(harness.config())
    diverged = harness.run(harness.config(system_prompt="Something else."), provider=ExplodingProvider())
    assert diverged.stop_reason == "runtime_error" and "replay divergence" in diverged.stop_detail


def test_boundary_inputs_taken_once_and_replayed_from_the_journal(harness: Harness) -> None:
    harness.control.queue_input("steer left")
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}]
    first = harness.run(harness.config(script))
    assert first.accepted_inputs == ("steer left",)

    fresh_control = MemoryControl()
    fresh_control.queue_input("a different input that must not be taken by the replay")
    again = harness.run(harness.config(script), provider=ExplodingProvider(), control=fresh_control)
    assert again == first
    assert fresh_control.take_calls == 0 and fresh_control.pending


def test_clock_replays_the_recorded_instant(harness: Harness) -> None:
    script = [{"tool_calls": [{"name": "clock", "arguments": {}}]}, {"text": "ok"}]
    key = replay_key("s1", "t1", 0, "tool_attempt", "call_0_0") + "/now"
    harness.journal.record(key, kind="tool_effect", outcome={"utc": "2001-01-01T00:00:00+00:00"})
    result = harness.run(harness.config(script))
    assert next(n for n in result.nodes if n.kind == "tool_result").payload["content"] == "2001-01-01T00:00:00+00:00"


def test_durable_sleep_after_a_crash_only_sleeps_the_remaining_time(harness: Harness) -> None:
    script = [{"tool_calls": [{"name": "sleep", "arguments": {"seconds": 30}}]}, {"text": "awake"}]
    key = replay_key("s1", "t1", 0, "tool_attempt", "call_0_0") + "/sleep"
    # A previous drive journaled a 30 s deadline 29.9 s ago, then crashed.
    harness.journal.record(key, kind="sleep", outcome={"deadline": time.time() + 0.1})
    started = time.monotonic()
    result = harness.run(harness.config(script))
    assert result.final_text == "awake"
    assert time.monotonic() - started < 2


def test_retry_backoff_sleeps_are_journaled_so_replay_does_not_wait(harness: Harness) -> None:
    from lashops.runtime.turn import RetryPolicy

    config = harness.config([{"text": "ok", "fail": [{"status": 500}]}], retry=RetryPolicy(base_delay=0.2))
    first = harness.run(config)
    assert harness.journal.keys_of_kind("sleep") == ["turn:s1:t1/0/sleep/retry-1"]
    started = time.monotonic()
    assert harness.run(config, provider=ExplodingProvider()) == first
    assert time.monotonic() - started < 0.15
