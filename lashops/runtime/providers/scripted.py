"""The ``scripted`` provider: deterministic, offline, no key.

The script is a list of steps, from ``request.parameters["script"]`` or a named script
(``request.parameters["script_name"]``, see :data:`SCRIPTS`). The step answering a request is
the number of assistant messages already in the prompt, so a script advances across the
steps and turns of a session and a replayed prompt gets the same step. A step may have:

- ``text``: streamed in chunks of ``chunk_size`` characters (default 8);
- ``tool_calls``: ``[{"name": ..., "arguments": dict | raw str}, ...]``, ids ``call_{step}_{i}``;
- ``usage``: usage buckets (default: derived from character counts);
- ``delay``: seconds to wait first; a ``timeout`` parameter shorter than that raises a
  transient timeout error after ``timeout`` seconds;
- ``fail``: errors for attempts 1..k, e.g. ``[{"status": 500, "message": "boom"}]`` or
  ``[{"timeout": true}]``; 429/5xx/timeouts are transient, other 4xx are not;
- ``fail_after_text``: text streamed before a ``fail`` error is raised (retraction tests).

Past the end of the script (or with none), it echoes the last user message: ``You said: ...``.
``count_file`` (a path) gets one line appended per call, for out-of-process call counting.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from lashops.runtime.providers.base import ProviderError, TextDeltaCallback
from lashops.runtime.types import ModelRequest, ModelResponse, ToolCall, Usage

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "demo": [
        {
            "text": "Let me work that out and check the time.",
            "tool_calls": [
                {"name": "calculator", "arguments": {"expression": "6 * 7"}},
                {"name": "clock", "arguments": {}},
            ],
        },
        {"text": "6 * 7 is 42, and I checked the clock for you. Anything else?"},
    ],
}


def register_script(name: str, steps: list[dict[str, Any]]) -> None:
    SCRIPTS[name] = list(steps)


def _is_transient(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


class ScriptedProvider:
    name = "scripted"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def _script(self, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        script = parameters.get("script")
        if script is not None:
            if not isinstance(script, list):
                raise ProviderError("scripted: 'script' must be a list of steps", transient=False, status=400)
            return script
        name = parameters.get("script_name")
        if name is None:
            return []
        try:
            return SCRIPTS[name]
        except KeyError:
            raise ProviderError(f"scripted: unknown script {name!r}", transient=False, status=400) from None

    def complete(self, request: ModelRequest, *, on_text_delta: TextDeltaCallback) -> ModelResponse:
        parameters = request.parameters
        with self._lock:
            self.calls += 1
        count_file = parameters.get("count_file")
        if count_file:
            with open(count_file, "a", encoding="utf-8") as handle:
                handle.write(f"{request.model} attempt={request.attempt}\n")

        script = self._script(parameters)
        index = sum(1 for message in request.messages if message.role == "assistant")
        step = script[index] if index < len(script) else None
        if step is None:
            return self._echo(request, on_text_delta)

        delay = float(step.get("delay") or 0)
        timeout = parameters.get("timeout")
        if delay > 0:
            if timeout is not None and float(timeout) < delay:
                time.sleep(float(timeout))
                raise ProviderError(f"scripted: timed out after {float(timeout):g}s", transient=True)
            time.sleep(delay)

        failures = step.get("fail") or []
        if request.attempt <= len(failures):
            failure = failures[request.attempt - 1] or {}
            if step.get("fail_after_text"):
                self._stream(str(step["fail_after_text"]), int(step.get("chunk_size") or 8), on_text_delta)
            if failure.get("timeout"):
                raise ProviderError("scripted: request timed out", transient=True)
            status = failure.get("status", 500)
            transient = failure.get("transient", _is_transient(status))
            raise ProviderError(
                str(failure.get("message") or f"scripted error {status}"), transient=transient, status=status
            )

        text = str(step.get("text") or "")
        self._stream(text, int(step.get("chunk_size") or 8), on_text_delta)
        calls = tuple(
            ToolCall(id=f"call_{index}_{i}", name=str(call["name"]), arguments=self._arguments(call.get("arguments")))
            for i, call in enumerate(step.get("tool_calls") or ())
        )
        usage = Usage.from_dict(step["usage"]) if step.get("usage") else self._usage(request, text, calls)
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=usage,
            finish_reason=step.get("finish_reason") or ("tool_calls" if calls else "stop"),
        )

    @staticmethod
    def _arguments(arguments: Any) -> str:
        if arguments is None:
            return "{}"
        if isinstance(arguments, str):
            return arguments
        return json.dumps(arguments, sort_keys=True)

    @staticmethod
    def _stream(text: str, chunk_size: int, on_text_delta: TextDeltaCallback) -> None:
        size = max(1, chunk_size)
        for start in range(0, len(text), size):
            on_text_delta(text[start : start + size])

    @staticmethod
    def _usage(request: ModelRequest, text: str, calls: tuple[ToolCall, ...]) -> Usage:
        prompt_chars = sum(len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages)
        output_chars = len(text) + sum(len(c.name) + len(c.arguments) for c in calls)
        return Usage(input_tokens=prompt_chars // 4 + 1, output_tokens=output_chars // 4 + 1)

    def _echo(self, request: ModelRequest, on_text_delta: TextDeltaCallback) -> ModelResponse:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = f"You said: {last_user}"
        self._stream(text, int(request.parameters.get("chunk_size") or 8), on_text_delta)
        return ModelResponse(text=text, usage=self._usage(request, text, ()), finish_reason="stop")


def build(*, env: Mapping[str, str]) -> ScriptedProvider:
    return ScriptedProvider()
