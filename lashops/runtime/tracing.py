"""Trace sinks: a JSON-lines file sink, a tee, and the redaction that keeps secrets out."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lashops.runtime.interfaces import TraceSink

REDACTED = "[redacted]"
_SECRET_KEYS = re.compile(r"^(api[_-]?key|x-api-key|authorization|secret|client_secret|password|access_token)$", re.I)
_SECRET_VALUES = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")

TRACE_TYPES = (
    "session_started",
    "turn_started",
    "prompt_built",
    "llm_call_started",
    "llm_call_completed",
    "llm_call_failed",
    "tool_call_started",
    "tool_call_completed",
    "token_usage",
    "turn_completed",
)


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-looking keys and values replaced by ``[redacted]``."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEYS.match(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value)
    return value


class JsonlTraceSink:
    """Appends one JSON object per line to ``path``, with a ``ts`` added and secrets redacted.

    The engine writes turn, prompt, model-call, tool-call and usage events; the host adds
    ``session_started`` (``{"type": "session_started", "session_id": ...}``) when it opens one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def trace(self, event: dict[str, Any]) -> None:
        line = json.dumps({"ts": time.time(), **redact(event)}, default=str, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


class TeeTraceSink:
    def __init__(self, sinks: Iterable[TraceSink]) -> None:
        self.sinks = list(sinks)

    def trace(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.trace(event)
