"""Contract tests: the real ``anthropic`` SDK against a loopback Messages API server."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from lashops.runtime.providers import ProviderError, build_provider
from lashops.runtime.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider, build
from lashops.runtime.types import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from tests.support.vendor_servers import ANTHROPIC_PATH, VendorServer

API_KEY = "sk-ant-loopback-0123456789abcdef-SECRET"
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
def provider(server: VendorServer) -> AnthropicProvider:
    return build(env={"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": server.anthropic_base_url})


def _request(**parameters: object) -> ModelRequest:
    return ModelRequest(
        model="claude-loopback",
        messages=(Message(role="system", content="Be brief."), Message(role="user", content="Weather in Oslo?")),
        tools=(WEATHER,),
        parameters={"timeout": 5, **parameters},
    )


def _complete(provider: AnthropicProvider, request: ModelRequest) -> tuple[ModelResponse, list[str]]:
    deltas: list[str] = []
    return provider.complete(request, on_text_delta=deltas.append), deltas


def _fail(provider: AnthropicProvider, request: ModelRequest) -> ProviderError:
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


def test_several_tool_uses_with_fragmented_input_json_are_assembled(server, provider):
    server.push(
        {
            "text": ["Checking."],
            "tool_calls": [
                {"id": "toolu_a", "name": "weather", "arguments": ['{"ci', 'ty": "Os', 'lo"}']},
                {"id": "toolu_b", "name": "weather", "arguments": ["{", '"city"', ': "Bergen"', "}"]},
                {"id": "toolu_c", "name": "clock", "arguments": []},
            ],
        }
    )

    response, deltas = _complete(provider, _request())

    assert deltas == ["Checking."]
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(id="toolu_a", name="weather", arguments='{"city": "Oslo"}'),
        ToolCall(id="toolu_b", name="weather", arguments='{"city": "Bergen"}'),
        ToolCall(id="toolu_c", name="clock", arguments="{}"),  # no deltas: the block's empty input
    )
    assert json.loads(response.tool_calls[1].arguments) == {"city": "Bergen"}


def test_usage_maps_all_four_anthropic_counters(server, provider):
    server.push(
        {
            "text": ["ok"],
            "usage": {
                "input_tokens": 40,
                "output_tokens": 250,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 300,
            },
        }
    )

    response, _ = _complete(provider, _request())

    assert response.usage.to_dict() == {
        "input_tokens": 40,
        "output_tokens": 250,  # from message_delta, which supersedes message_start's placeholder
        "cache_read_input_tokens": 1000,
        "cache_write_input_tokens": 300,
        "reasoning_output_tokens": 0,
    }


def test_max_tokens_stop_reason_is_length(server, provider):
    server.push({"text": ["trunc"], "finish_reason": "max_tokens"})

    response, _ = _complete(provider, _request())

    assert response.finish_reason == "length"


def test_request_body_has_top_level_system_tool_results_in_a_user_turn_and_tool_schemas(server, provider):
    server.push({"text": ["done"]})
    request = ModelRequest(
        model="claude-loopback",
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather in Oslo and Bergen?"),
            Message(
                role="assistant",
                content="Let me check.",
                tool_calls=(
                    ToolCall(id="toolu_a", name="weather", arguments='{"city": "Oslo"}'),
                    ToolCall(id="toolu_b", name="weather", arguments='{"city": "Bergen"}'),
                ),
            ),
            Message(role="tool", tool_call_id="toolu_a", name="weather", content="sunny"),
            Message(role="tool", tool_call_id="toolu_b", name="weather", content="no such city", is_error=True),
            Message(role="user", content="Thanks, and tomorrow?"),
        ),
        tools=(WEATHER,),
        parameters={"temperature": 0.2, "timeout": 5},
    )

    _complete(provider, request)

    body = server.requests_to(ANTHROPIC_PATH)[0].body
    assert body["model"] == "claude-loopback"
    assert body["stream"] is True
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["temperature"] == 0.2
    assert "timeout" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Bergen?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {"city": "Bergen"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "no such city", "is_error": True},
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {"name": "weather", "description": "Current weather for a city.", "input_schema": WEATHER.parameters}
    ]


def test_an_explicit_max_tokens_overrides_the_default(server, provider):
    server.push({"text": ["ok"]})

    _complete(provider, _request(max_tokens=100))

    assert server.requests[0].body["max_tokens"] == 100


@pytest.mark.parametrize(
    ("status", "error_type", "transient"),
    [
        (500, "api_error", True),
        (529, "overloaded_error", True),
        (429, "rate_limit_error", True),
        (400, "invalid_request_error", False),
        (401, "authentication_error", False),
    ],
)
def test_http_errors_map_to_provider_errors_by_status_with_exactly_one_attempt(
    server, provider, status, error_type, transient
):
    server.push({"status": status, "error_type": error_type, "message": f"scripted {status}"})

    error = _fail(provider, _request())

    assert error.status == status
    assert error.transient is transient
    assert error_type in str(error) and f"scripted {status}" in str(error)
    assert server.stats()["requests"] == 1  # the SDK's own retries are off; the engine retries


def test_a_hang_before_the_response_is_a_transient_timeout_within_the_configured_timeout(server, provider):
    server.push({"delay": 10})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert "timed out" in str(error)
    assert time.monotonic() - started < 2.0


def test_a_hang_mid_stream_is_a_transient_timeout(server, provider):
    server.push({"text": ["partial ", "answer"], "hang_after": 3, "hang": 10})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert "timed out" in str(error)
    assert time.monotonic() - started < 2.0


def test_an_overloaded_error_event_inside_the_stream_is_transient(server, provider):
    server.push({"text": ["a"], "stream_error": {"type": "overloaded_error", "message": "Overloaded"}})

    error = _fail(provider, _request())

    assert error.transient is True
    assert "overloaded_error" in str(error)


def test_an_invalid_request_error_event_inside_the_stream_is_not_transient(server, provider):
    server.push({"stream_error": {"type": "invalid_request_error", "message": "bad"}})

    error = _fail(provider, _request())

    assert error.transient is False


def test_a_server_trickling_past_the_timeout_is_stopped_at_the_deadline(server, provider):
    # every read returns within the socket timeout, so only the whole-call deadline can stop this
    server.push({"text": ["drip"] * 20, "chunk_interval": 0.2})

    started = time.monotonic()
    error = _fail(provider, _request(timeout=0.5))

    assert error.transient is True
    assert "within 0.5s" in str(error)
    assert time.monotonic() - started < 1.5


def test_a_stream_cut_before_message_stop_is_transient(server, provider):
    server.push({"text": ["a", "b", "c"], "truncate_after": 4})

    error = _fail(provider, _request())

    assert error.transient is True
    assert "message_stop" in str(error)


def test_a_refused_connection_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = build(env={"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"})

    error = _fail(provider, _request())

    assert error.transient is True
    assert error.status is None


def test_the_api_key_is_sent_but_never_appears_in_errors_reprs_or_logs(server, provider, caplog):
    # a hostile or careless server that echoes the key back in its error bodies
    server.push({"status": 401, "error_type": "authentication_error", "message": f"invalid x-api-key {API_KEY}"})
    server.push({"stream_error": {"type": "overloaded_error", "message": f"busy for {API_KEY}"}})
    caplog.set_level(logging.DEBUG)

    errors = [_fail(provider, _request()), _fail(provider, _request())]

    sent = server.requests[0].headers
    assert API_KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
        assert error.__cause__ is None and error.__context__ is None
        assert "[redacted]" in str(error)
    assert API_KEY not in repr(provider)
    assert API_KEY not in caplog.text


def test_no_key_and_no_base_url_is_a_non_transient_error():
    provider = build(env={})

    error = _fail(provider, _request())

    assert error.transient is False
    assert "ANTHROPIC_API_KEY" in str(error)


def test_the_registry_builds_this_provider_from_env(server):
    env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": server.anthropic_base_url}

    provider = build_provider("anthropic", env=env)

    assert isinstance(provider, AnthropicProvider)
    assert provider.name == "anthropic"
