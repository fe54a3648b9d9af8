"""Traces: the JSONL sink records the turn and never carries API keys."""

from __future__ import annotations

import json

from lashops.runtime.tracing import JsonlTraceSink, redact

from .helpers import Harness


def test_jsonl_trace_has_turn_model_tool_and_usage_events(harness: Harness, tmp_path) -> None:
    path = tmp_path / "trace.jsonl"
    sink = JsonlTraceSink(path)
    sink.trace({"type": "session_started", "session_id": "s1"})
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}, {"text": "2"}]
    config = harness.config(script, parameters={"api_key": "sk-secretsecretsecret", "note": "Bearer abcdefghijkl"})
    harness.run(config, trace=sink)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    types = [line["type"] for line in lines]
    for expected in (
        "session_started",
        "turn_started",
        "prompt_built",
        "llm_call_started",
        "llm_call_completed",
        "tool_call_started",
        "tool_call_completed",
        "token_usage",
        "turn_completed",
    ):
        assert expected in types
    assert all("ts" in line for line in lines)
    text = path.read_text()
    assert "sk-secret" not in text and "abcdefghijkl" not in text


def test_redact_masks_secret_keys_and_values_but_not_token_counts() -> None:
    data = {
        "api_key": "x",
        "headers": {"Authorization": "Bearer abcdefghijkl"},
        "input_tokens": 5,
        "v": "sk-abcdefghijk",
    }
    assert redact(data) == {
        "api_key": "[redacted]",
        "headers": {"Authorization": "[redacted]"},
        "input_tokens": 5,
        "v": "[redacted]",
    }
