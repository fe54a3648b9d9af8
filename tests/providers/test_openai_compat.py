"""Contract tests: the real ``openai`` SDK against a loopback Chat Completions server."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from lashops.runtime.providers import ProviderError, build_provider
from lashops.runtime.providers.openai_compat import OpenAICompatProvider, build
from lashops.runtime.types import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from tests.support.vendor_servers import OPENAI_PATH, VendorServer

API_KEY = "sk-loopback-0123456789abcdef-SECRET"
WEATHER = ToolSpec(
    name="weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
def server() -> Iterator[VendorServer]:
    with VendorServer() as running:
        yield running


@pytest.fixture
def provider(server: VendorServer) -> OpenAICompatProvider:
    return build(env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.openai_base_url})


def _request(**parameters: object) -> ModelRequest:
    return ModelRequest(
        model="gpt-loopback",
        messages=(Message(role="system", content="Be brief."), Message(role="user", content="Weather in Oslo?")),
        tools=(WEATHER,),
        parameters={"timeout": 5, **parameters},
    )


def _complete(provider: OpenAICompatProvider, request: ModelRequest) -> tuple[ModelResponse, list[str]]:
    deltas: list[str] = []
    return provider.complete(request, on_text_delta=deltas.append), deltas


def _fail(provider: OpenAICompatProvider, request: ModelRequest) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.complete(request, on_text_delta=lambda _: None)
    return caught.value


def test_streamed_text_deltas_arrive_in_order_and_concatenate_to_the_settled_text(server, provider):
    server.push({"text": ["It is ", "sunny ", "in Oslo", "."]})

    response, deltas = _complete(provider, _request())

    assert deltas == ["It is ", "sunny ", "in Oslo", "."]
    assert response.text == "It is sunny in Oslo."
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()


def test_several_tool_calls_with_fragmented_arguments_are_assembled(server, provider):
    server.push(
        {
            "text": ["Checking."],
            "tool_calls": [
                {"id": "call_a", "name": "weather", "arguments": ['{"ci', 'ty": "Os', 'lo"}']},
                {"id": "call_b", "name": "weather", "arguments": ["{", '"city"', ': "Bergen"', "}"]},
                {"id": "call_c", "name": "clock", "arguments": []},
            ],
        }
    )

    response, _ = _complete(provider, _request())

    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(id="call_a", name="weather", arguments='{"city": "Oslo"}'),
        ToolCall(id="call_b", name="weather", arguments='{"city": "Bergen"}'),
        ToolCall(id="call_c", name="clock", arguments=""),
    )
    assert json.loads(response.tool_calls[1].arguments) == {"city": "Bergen"}


def test_tool_calls_sharing_index_zero_with_distinct_ids_stay_separate(server, provider):
    # older Ollama builds stream every parallel call at index 0
    def chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [choice]}

    call = {"type": "function"}
    server.push(
        {
            "raw_events": [
                chunk({"tool_calls": [{**call, "index": 0, "id": "c1", "function": {"name": "a", "arguments": "{}"}}]}),
                chunk({"tool_calls": [{**call, "index": 0, "id": "c2", "function": {"name": "b", "arguments": "{}"}}]}),
                chunk({}, "stop"),
                "[DONE]",
            ]
        }
    )

    response, _ = _complete(provider, _request())

    assert [(c.id, c.name) for c in response.tool_calls] == [("c1", "a"), ("c2", "b")]
    assert response.finish_reason == "tool_calls"


def test_usage_splits_cached_prompt_tokens_out_of_input_and_reports_reasoning(server, provider):
    server.push(
        {
            "text": ["ok"],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1000},
                "completion_tokens_details": {"reasoning_tokens": 120},
            },
        }
    )

    response, _ = _complete(provider, _request())

    assert response.usage.to_dict() == {
        "input_tokens": 200,
        "output_tokens": 300,
        "cache_read_input_tokens": 1000,
        "cache_write_input_tokens": 0,
        "reasoning_output_tokens": 120,
    }


def test_usage_without_details_maps_plain_counts(server, provider):
    server.push({"text": ["ok"], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})

    response, _ = _complete(provider, _request())

    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 3)
    assert response.usage.cache_read_input_tokens == response.usage.reasoning_output_tokens == 0


def test_request_body_maps_messages_tool_results_tools_and_parameters(server, provider):
    server.push({"text": ["done"]})
    request = ModelRequest(
        model="gpt-loopback",
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather in Oslo and Bergen?"),
            Message(
                role="assistant",
                content="",
                tool_calls=(
                    ToolCall(id="call_a", name="weather", arguments='{"city": "Oslo"}'),
                    ToolCall(id="call_b", name="weather", arguments='{"city": "Bergen"}'),
                ),
            ),
            Message(role="tool", tool_call_id="call_a", name="weather", content="sunny"),
            Message(role="tool", tool_call_id="call_b", name="weather", content="no such city", is_error=True),
        ),
        tools=(WEATHER,),
        parameters={"temperature": 0.2, "max_tokens": 64, "top_k": 5, "timeout": 5},
    )

    _complete(provider, request)

    body = server.requests_to(OPENAI_PATH)[0].body
    assert body["model"] == "gpt-loopback"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo and Bergen?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Bergen"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "no such city"},
    ]
    assert body["tools"] == [{"type": "function", "function": WEATHER.to_dict()}]
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)
    assert body["top_k"] == 5  # unknown to the SDK: sent through extra_body for vLLM-style servers
    assert "timeout" not in body


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (503, True), (429, True), (400, False), (401, False), (404, False)],
)
def test_http_errors_map_to_provider_errors_by_status_with_exactly_one_attempt(server, provider, status, transient):
    server.push({"status": status, "message": f"scripted {status}"})

    error = _fail(provider, _request())

    assert error.status == status
    assert error.transient is transient
    assert f"scripted {status}" in str(error)
    assert server.stats()["requests"] == 1  # the SDK's own retries are off; the engine retries


def test_a_hang_before_the_response_is_a_transient_timeout_within_the_configured_timeout(server, provider):
    server.push({"delay": 10})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert "timed out" in str(error)
    assert time.monotonic() - started < 2.0


def test_a_hang_mid_stream_is_a_transient_timeout(server, provider):
    server.push({"text": ["partial ", "answer"], "hang_after": 2, "hang": 10})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert time.monotonic() - started < 2.0


def test_a_server_trickling_past_the_timeout_is_stopped_at_the_deadline(server, provider):
    # every read returns within the socket timeout, so only the whole-call deadline can stop this
    server.push({"text": ["drip"] * 20, "chunk_interval": 0.2})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert "within 0.5s" in str(error)
    assert time.monotonic() - started < 1.5


def test_a_stream_cut_before_it_finishes_is_transient(server, provider):
    server.push({"text": ["a", "b", "c"], "truncate_after": 3})

    error = _fail(provider, _request())

    assert error.transient is True
    assert "finish_reason" in str(error)


def test_an_error_object_inside_the_stream_is_transient(server, provider):
    server.push({"text": ["a"], "stream_error": {"type": "server_error", "message": "model crashed"}})

    error = _fail(provider, _request())

    assert error.transient is True
    assert "model crashed" in str(error)


def test_an_exception_from_the_delta_callback_propagates_unchanged(server, provider):
    server.push({"text": ["a", "b"]})

    class Cancelled(Exception):
        pass

    def on_text_delta(_: str) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        provider.complete(_request(), on_text_delta=on_text_delta)


def test_a_refused_connection_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = build(env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"})

    error = _fail(provider, _request())

    assert error.transient is True
    assert error.status is None


def test_the_api_key_is_sent_but_never_appears_in_errors_reprs_or_logs(server, provider, caplog):
    # a hostile or careless server that echoes the key back in its error body
    server.push({"status": 401, "error_type": "invalid_api_key", "message": f"Incorrect API key provided: {API_KEY}"})
    server.push({"status": 500, "message": f"upstream rejected {API_KEY}"})
    caplog.set_level(logging.DEBUG)

    errors = [_fail(provider, _request()), _fail(provider, _request())]

    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
        assert error.__cause__ is None and error.__context__ is None
    assert "[redacted]" in str(errors[0])
    assert API_KEY not in repr(provider)
    assert API_KEY not in caplog.text


def test_a_base_url_without_a_key_uses_a_placeholder_key(server):
    server.push({"text": ["local model"]})
    provider = build(env={"OPENAI_BASE_URL": server.openai_base_url})

    response, _ = _complete(provider, _request())

    assert response.text == "local model"
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


def test_no_key_and_no_base_url_is_a_non_transient_error():
    provider = build(env={})

    error = _fail(provider, _request())

    assert error.transient is False
    assert "OPENAI_API_KEY" in str(error)


def test_the_registry_builds_this_provider_from_env(server):
    provider = build_provider("openai", env={"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.openai_base_url})

    assert isinstance(provider, OpenAICompatProvider)
    assert provider.name == "openai"
