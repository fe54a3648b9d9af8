"""OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp servers) through the
``openai`` SDK, streamed.

Configuration comes from the environment: ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. A key may
be omitted when a base URL is set (local servers rarely check it). The SDK's own retries are off:
the engine decides what to retry from :class:`ProviderError.transient`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai

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

NAME = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RESERVED = ("model", "messages", "tools", "stream", "stream_options")
_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def build(*, env: Mapping[str, str]) -> OpenAICompatProvider:
    """Registry factory: a provider configured from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``."""
    return OpenAICompatProvider(api_key=env.get("OPENAI_API_KEY") or None, base_url=env.get("OPENAI_BASE_URL") or None)


def messages_to_openai(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, Any]]:
    """Our provider-neutral messages in Chat Completions shape."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                # null content is the documented shape of a tool-calls-only assistant message
                item["content"] = message.content or None
                item["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in message.tool_calls
                ]
            out.append(item)
        elif message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def tools_to_openai(tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def usage_from_openai(usage: Any) -> Usage:
    """Chat Completions usage in our buckets: cached prompt tokens are split out of the input."""
    if usage is None:
        return Usage()
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(prompt_details, "cached_tokens", 0) or 0) if prompt_details else 0
    completion_details = getattr(usage, "completion_tokens_details", None)
    reasoning = int(getattr(completion_details, "reasoning_tokens", 0) or 0) if completion_details else 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cache_read_input_tokens=cached,
        reasoning_output_tokens=reasoning,
    )


@dataclass
class _PartialCall:
    id: str
    name: str
    arguments: str


class _ToolCallAssembler:
    """Joins streamed tool-call fragments by ``index``. Some servers (older Ollama) give every call
    index 0 with distinct ids, so a new id at a used index starts a new call."""

    def __init__(self) -> None:
        self._calls: list[_PartialCall] = []
        self._slot_by_index: dict[int, int] = {}

    def add(self, delta: Any) -> None:
        index = int(getattr(delta, "index", None) or 0)
        function = getattr(delta, "function", None)
        name = (getattr(function, "name", None) or "") if function else ""
        fragment = (getattr(function, "arguments", None) or "") if function else ""
        call_id = getattr(delta, "id", None) or ""
        slot = self._slot_by_index.get(index)
        if slot is None or (call_id and self._calls[slot].id and call_id != self._calls[slot].id):
            self._calls.append(_PartialCall(id=call_id, name=name, arguments=fragment))
            self._slot_by_index[index] = len(self._calls) - 1
            return
        call = self._calls[slot]
        call.id = call.id or call_id
        call.name = call.name or name
        call.arguments += fragment

    def result(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=c.id or f"call_{uuid.uuid4().hex[:24]}", name=c.name, arguments=c.arguments)
            for c in self._calls
        )


class OpenAICompatProvider:
    """A :class:`~lashops.runtime.providers.base.Provider` for Chat Completions servers."""

    name = NAME

    def __init__(self, *, api_key: str | None, base_url: str | None) -> None:
        self.base_url = base_url or DEFAULT_BASE_URL
        self._missing_key = api_key is None and base_url is None
        self._redact = Redactor(api_key)
        self._client = openai.OpenAI(
            api_key=api_key or PLACEHOLDER_API_KEY,
            base_url=self.base_url,
            max_retries=0,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(base_url={self.base_url!r})"

    def complete(self, request: ModelRequest, *, on_text_delta: TextDeltaCallback) -> ModelResponse:
        """One streamed Chat Completions call; see :class:`~lashops.runtime.providers.base.Provider`."""
        if self._missing_key:
            raise ProviderError("openai: OPENAI_API_KEY is not set (and no OPENAI_BASE_URL)", transient=False)
        timeout = request_timeout(request.parameters)
        kwargs, extra_body = split_parameters(request.parameters, self._client.chat.completions.create, _RESERVED)
        if request.tools:
            kwargs["tools"] = tools_to_openai(request.tools)
        if extra_body:
            kwargs["extra_body"] = extra_body
        deadline = Deadline(timeout)
        try:
            stream = self._client.chat.completions.create(  # type: ignore[call-overload]  # plain-dict messages; **kwargs hide the overload
                model=request.model,
                messages=messages_to_openai(request.messages),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout,
                **kwargs,
            )
            with stream:
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
        calls = _ToolCallAssembler()
        usage: Any = None
        finish: str | None = None
        for chunk in stream:
            deadline.check(NAME)
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage  # servers that report usage on every chunk: the last one wins
            for choice in chunk.choices or ():
                if choice.index not in (0, None):
                    continue
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        text_parts.append(delta.content)
                        on_text_delta(delta.content)
                    for call_delta in delta.tool_calls or ():
                        calls.add(call_delta)
                if choice.finish_reason:
                    finish = choice.finish_reason
        if finish is None:
            raise ProviderError("openai: stream ended before a finish_reason", transient=True)
        tool_calls = calls.result()
        finish_reason = _FINISH_REASONS.get(finish, "stop")
        if tool_calls and finish_reason == "stop":
            # Ollama and some llama.cpp builds report "stop" alongside tool calls
            finish_reason = "tool_calls"
        return ModelResponse(
            text="".join(text_parts), tool_calls=tool_calls, usage=usage_from_openai(usage), finish_reason=finish_reason
        )

    def _translate(self, exc: Exception, timeout: float) -> ProviderError | None:
        """An SDK or transport failure as a ProviderError, with the key scrubbed; None to re-raise."""
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(f"openai: request timed out after {timeout:g}s", transient=True)
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(self._redact(f"openai: connection error: {_cause(exc)}"), transient=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._redact(_error_detail(exc))
            return ProviderError(
                f"openai: HTTP {status}: {detail}", transient=is_transient_status(status), status=status
            )
        if isinstance(exc, openai.APIError):
            # an error object inside an otherwise successful stream: the server failed mid-answer
            return ProviderError(self._redact(f"openai: error in stream: {exc.message}"), transient=True)
        if isinstance(exc, TRANSPORT_ERRORS):
            return ProviderError(self._redact(f"openai: transport error: {type(exc).__name__}"), transient=True)
        if isinstance(exc, openai.OpenAIError):
            return ProviderError(self._redact(f"openai: {type(exc).__name__}: {exc}"), transient=False)
        return None


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause is not None else type(exc).__name__


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            kind = error.get("type") or error.get("code")
            message = error.get("message") or ""
            return f"{kind}: {message}" if kind else str(message)
        return str(error)
    return str(getattr(exc, "message", "") or type(exc).__name__)
