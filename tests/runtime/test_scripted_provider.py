"""The scripted provider: deterministic steps, streaming, failures, echo fallback."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lashops.runtime.providers import build_provider
from lashops.runtime.providers.base import ProviderError
from lashops.runtime.providers.scripted import SCRIPTS
from lashops.runtime.types import Message, ModelRequest, ToolCall


def _request(messages: list[Message], attempt: int = 1, **parameters: object) -> ModelRequest:
    return ModelRequest(model="scripted-1", messages=tuple(messages), parameters=parameters, attempt=attempt)


def _collect() -> tuple[list[str], Callable[[str], None]]:
    chunks: list[str] = []
    return chunks, chunks.append


def test_registry_builds_scripted_provider_without_keys() -> None:
    provider = build_provider("scripted", env={})
    assert provider.name == "scripted"


def test_text_is_streamed_in_chunks_that_join_to_the_answer() -> None:
    provider = build_provider("scripted", env={})
    chunks, on_delta = _collect()
    script = [{"text": "abcdefghij", "chunk_size": 3}]
    response = provider.complete(_request([Message("user", "hi")], script=script), on_text_delta=on_delta)
    assert chunks == ["abc", "def", "ghi", "j"]
    assert response.text == "abcdefghij"
    assert response.finish_reason == "stop"
    assert response.usage.output_tokens > 0


def test_step_is_chosen_by_assistant_messages_so_it_advances_and_replays() -> None:
    provider = build_provider("scripted", env={})
    script = [{"text": "first"}, {"text": "second"}]
    history = [Message("user", "a"), Message("assistant", "first"), Message("user", "b")]
    _chunks, on_delta = _collect()
    assert provider.complete(_request(history[:1], script=script), on_text_delta=on_delta).text == "first"
    assert provider.complete(_request(history, script=script), on_text_delta=on_delta).text == "second"
    assert provider.complete(_request(history, script=script), on_text_delta=on_delta).text == "second"


def test_several_tool_calls_get_deterministic_ids_and_json_arguments() -> None:
    provider = build_provider("scripted", env={})
    script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}, {"name": "x", "arguments": "{bad"}]}
    ]
    response = provider.complete(_request([Message("user", "go")], script=script), on_text_delta=lambda _: None)
    assert [c.id for c in response.tool_calls] == ["call_0_0", "call_0_1"]
    assert json.loads(response.tool_calls[0].arguments) == {"expression": "1+1"}
    assert response.tool_calls[1].arguments == "{bad"
    assert response.finish_reason == "tool_calls"


def test_failures_apply_to_chosen_attempts_and_classify_transience() -> None:
    provider = build_provider("scripted", env={})
    script = [{"text": "ok", "fail": [{"status": 500, "message": "boom"}, {"status": 429}, {"status": 400}]}]
    messages = [Message("user", "go")]
    with pytest.raises(ProviderError) as first:
        provider.complete(_request(messages, 1, script=script), on_text_delta=lambda _: None)
    assert (first.value.transient, first.value.status, str(first.value)) == (True, 500, "boom")
    with pytest.raises(ProviderError) as second:
        provider.complete(_request(messages, 2, script=script), on_text_delta=lambda _: None)
    assert second.value.transient is True
    with pytest.raises(ProviderError) as third:
        provider.complete(_request(messages, 3, script=script), on_text_delta=lambda _: None)
    assert third.value.transient is False
    assert provider.complete(_request(messages, 4, script=script), on_text_delta=lambda _: None).text == "ok"


def test_fail_after_text_streams_then_fails() -> None:
    provider = build_provider("scripted", env={})
    chunks, on_delta = _collect()
    script = [{"text": "final", "fail": [{"status": 503}], "fail_after_text": "partial"}]
    with pytest.raises(ProviderError):
        provider.complete(_request([Message("user", "go")], script=script), on_text_delta=on_delta)
    assert "".join(chunks) == "partial"


def test_delay_longer_than_timeout_raises_transient_timeout() -> None:
    provider = build_provider("scripted", env={})
    script = [{"text": "slow", "delay": 5}]
    with pytest.raises(ProviderError) as error:
        provider.complete(_request([Message("user", "go")], script=script, timeout=0.01), on_text_delta=lambda _: None)
    assert error.value.transient is True
    assert "timed out" in str(error.value)


def test_exhausted_or_absent_script_echoes_last_user_message() -> None:
    provider = build_provider("scripted", env={})
    messages = [Message("user", "first"), Message("assistant", "x"), Message("user", "second")]
    response = provider.complete(_request(messages), on_text_delta=lambda _: None)
    assert response.text == "You said: second"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response == provider.complete(_request(messages), on_text_delta=lambda _: None)


def test_named_demo_script_calls_calculator_and_clock() -> None:
    provider = build_provider("scripted", env={})
    response = provider.complete(_request([Message("user", "hi")], script_name="demo"), on_text_delta=lambda _: None)
    assert [c.name for c in response.tool_calls] == ["calculator", "clock"]
    assert "demo" in SCRIPTS


def test_unknown_script_name_is_a_permanent_error() -> None:
    provider = build_provider("scripted", env={})
    with pytest.raises(ProviderError) as error:
        provider.complete(_request([Message("user", "hi")], script_name="nope"), on_text_delta=lambda _: None)
    assert error.value.transient is False


def test_count_file_gets_one_line_per_call(tmp_path) -> None:
    provider = build_provider("scripted", env={})
    count_file = tmp_path / "calls.txt"
    for _ in range(3):
        provider.complete(_request([Message("user", "hi")], count_file=str(count_file)), on_text_delta=lambda _: None)
    assert len(count_file.read_text().splitlines()) == 3


def test_tool_messages_in_prompt_do_not_break_step_counting() -> None:
    provider = build_provider("scripted", env={})
    call = ToolCall(id="call_0_0", name="calculator", arguments="{}")
    messages = [
        Message("user", "go"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "2", tool_call_id="call_0_0", name="calculator"),
    ]
    script = [{"tool_calls": [{"name": "calculator", "arguments": {}}]}, {"text": "done"}]
    assert provider.complete(_request(messages, script=script), on_text_delta=lambda _: None).text == "done"
