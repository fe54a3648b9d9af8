"""Anthropic Messages API through the ``anthropic`` SDK, streamed.

Configuration comes from the environment: ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` (a key
may be omitted when a base URL is set, e.g. a gateway that adds its own). The SDK's own retries are
off: the engine decides what to retry from :class:`ProviderError.transient`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anthropic

from lashops.runtime.providers._common import (
    PLACEHOLDER_API_KEY,
    TRANSPORT_ERRORS,
    Deadline,
    Redactor,
    is_transient_status,
    request_timeout,
    split_parameters,
)
from lashops.runtime.providers.base import ProviderError, TextDeltaCallback
from lashops.runtime.types import FinishReason, Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage

NAME = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
_RESERVED = ("model", "messages", "tools", "stream", "system")
_STOP_REASONS: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
# error types Anthropic sends inside a 200 stream that are worth retrying
_TRANSIENT_STREAM_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def build(*, env: Mapping[str, str]) -> AnthropicProvider:
    """Registry factory: a provider configured from ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``."""
    return AnthropicProvider(
        api_key=env.get("ANTHROPIC_API_KEY") or None, base_url=env.get("ANTHROPIC_BASE_URL") or None
    )


def _tool_input(arguments: str) -> dict[str, Any]:
    # tool_use.input must be an object; arguments the engine already reported as invalid JSON
    # are replayed as an empty object rather than failing the whole request.
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def messages_to_anthropic(messages: tuple[Message, ...] | list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Our messages as (top-level system prompt, Messages API turns).

    System messages are joined into ``system``; tool results become ``tool_result`` blocks of a user
    turn; consecutive turns of the same role are merged, since results of parallel tool calls must
    arrive together in the one user turn after the assistant's ``tool_use`` blocks.
    """
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in messages:
        text_blocks = [{"type": "text", "text": message.content}] if message.content else []
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
        elif message.role == "user":
            append("user", text_blocks)
        elif message.role == "assistant":
            tool_blocks = [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                for c in message.tool_calls
            ]
            append("assistant", text_blocks + tool_blocks)
        elif message.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
            block["content"] = message.content
            if message.is_error:
                block["is_error"] = True
            append("user", [block])
    return "\n\n".join(system_parts), turns


def tools_to_anthropic(tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


def _int(value: Any) -> int:
    return int(value or 0)


class _UsageTracker:
    """message_start carries the input side; message_delta the cumulative output (and, on newer
    API versions, may restate input counts). A later non-null value replaces an earlier one."""

    _FIELDS = {
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
        "cache_read_input_tokens": "cache_read_input_tokens",
        "cache_creation_input_tokens": "cache_write_input_tokens",
    }

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def update(self, usage: Any) -> None:
        if usage is None:
            return
        for wire, ours in self._FIELDS.items():
            value = getattr(usage, wire, None)
            if value is not None:
                self.values[ours] = _int(value)

    def result(self) -> Usage:
        return Usage(**self.values)


class AnthropicProvider:
    """A :class:`~lashops.runtime.providers.base.Provider` for the Anthropic Messages API."""

    name = NAME

    def __init__(self, *, api_key: str | None, base_url: str | None) -> None:
        self.base_url = base_url or DEFAULT_BASE_URL
        self._missing_key = api_key is None and base_url is None
        self._redact = Redactor(api_key)
        self._client = anthropic.Anthropic(
            api_key=api_key or PLACEHOLDER_API_KEY,
            base_url=self.base_url,
            max_retries=0,
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self.base_url!r})"

    def complete(self, request: ModelRequest, *, on_text_delta: TextDeltaCallback) -> ModelResponse:
        """One streamed Messages call; see :class:`~lashops.runtime.providers.base.Provider`."""
        if self._missing_key:
            raise ProviderError("anthropic: ANTHROPIC_API_KEY is not set (and no ANTHROPIC_BASE_URL)", transient=False)
        timeout = request_timeout(request.parameters)
        kwargs, extra_body = split_parameters(request.parameters, self._client.messages.create, _RESERVED)
        kwargs.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        system, turns = messages_to_anthropic(request.messages)
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = tools_to_anthropic(request.tools)
        if extra_body:
            kwargs["extra_body"] = extra_body
        deadline = Deadline(timeout)
        try:
            stream = self._client.messages.create(
                model=request.model,
                messages=turns,  # type: ignore[arg-type]  # plain dicts of the MessageParam shape
                stream=True,
                timeout=timeout,
                **kwargs,
            )
            with stream:  # type: ignore[union-attr]  # stream=True: a Stream (the **kwargs hide the overload)
                return self._consume(stream, on_text_delta, deadline)
        except ProviderError:
            raise
        except Exception as exc:
            error = self._translate(exc, timeout)
            if error is None:
                raise
        # Raised outside the handler so the SDK exception (whose text may echo request details)
        # is not even attached as __context__.
        raise error

    def _consume(self, stream: Any, on_text_delta: TextDeltaCallback, deadline: Deadline) -> ModelResponse:
        text_parts: list[str] = []
        # content index -> [id, name, json fragments, input given at block start]
        tools: dict[int, list[Any]] = {}
        usage = _UsageTracker()
        stop_reason: str | None = None
        stopped = False
        for event in stream:
            deadline.check(NAME)
            kind = getattr(event, "type", None)
            if kind == "message_start":
                usage.update(event.message.usage)
            elif kind == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    tools[event.index] = [block.id, block.name, [], getattr(block, "input", None)]
            elif kind == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    text_parts.append(delta.text)
                    on_text_delta(delta.text)
                elif delta.type == "input_json_delta" and event.index in tools:
                    tools[event.index][2].append(delta.partial_json)
            elif kind == "message_delta":
                stop_reason = event.delta.stop_reason or stop_reason
                usage.update(event.usage)
            elif kind == "message_stop":
                stopped = True
        if not stopped:
            raise ProviderError("anthropic: stream ended before message_stop", transient=True)
        tool_calls = tuple(
            ToolCall(id=call_id, name=name, arguments="".join(fragments) or json.dumps(start_input or {}))
            for _, (call_id, name, fragments, start_input) in sorted(tools.items())
        )
        if stop_reason == "tool_use" or (tool_calls and stop_reason != "max_tokens"):
            finish_reason: FinishReason = "tool_calls"
        else:
            finish_reason = _STOP_REASONS.get(stop_reason or "", "stop")
        return ModelResponse(
            text="".join(text_parts), tool_calls=tool_calls, usage=usage.result(), finish_reason=finish_reason
        )

    def _translate(self, exc: Exception, timeout: float) -> ProviderError | None:
        """An SDK or transport failure as a ProviderError, with the key scrubbed; None to re-raise."""
        if isinstance(exc, anthropic.APITimeoutError):
            return ProviderError(f"anthropic: request timed out after {timeout:g}s", transient=True)
        if isinstance(exc, anthropic.APIConnectionError):
            return ProviderError(self._redact(f"anthropic: connection error: {_cause(exc)}"), transient=True)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            kind, message = _error_detail(exc)
            detail = self._redact(f"{kind}: {message}" if kind else message)
            if status < 400:
                # an error event inside a 200 stream (e.g. overloaded_error mid-answer)
                return ProviderError(
                    f"anthropic: error in stream: {detail}", transient=kind in _TRANSIENT_STREAM_ERRORS
                )
            return ProviderError(
                f"anthropic: HTTP {status}: {detail}", transient=is_transient_status(status), status=status
            )
        if isinstance(exc, TRANSPORT_ERRORS):
            # the anthropic SDK does not wrap transport errors raised while a stream is read
            if "timeout" in type(exc).__name__.lower():
                return ProviderError(f"anthropic: stream read timed out after {timeout:g}s", transient=True)
            return ProviderError(self._redact(f"anthropic: transport error: {type(exc).__name__}"), transient=True)
        if isinstance(exc, anthropic.AnthropicError):
            return ProviderError(self._redact(f"anthropic: {type(exc).__name__}: {exc}"), transient=False)
        return None


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause is not None else type(exc).__name__


def _error_detail(exc: Any) -> tuple[str, str]:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            return str(error.get("type") or ""), str(error.get("message") or "")
        return "", str(error)
    return "", str(getattr(exc, "message", "") or type(exc).__name__)
