"""Tools: what a model can call, the per-session catalog, and safe invocation.

A tool handler takes ``(args, ctx)`` and returns a :class:`ToolOutput`, a ``str`` or a
JSON-able ``dict``. Bad arguments, unknown names and handler exceptions become error
results the model sees; only :class:`ToolFailure` stops the turn (``tool_failure``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from lashops.runtime.effects import durable_sleep, run_effect
from lashops.runtime.interfaces import EffectJournal
from lashops.runtime.types import ToolCall, ToolSpec, Usage


class ToolFailure(Exception):
    """Raised by a handler for a failure the model cannot recover from: the turn stops
    with ``tool_failure`` after the current tool batch."""


class ToolProviderError(ImportError):
    """A configured tool provider or plugin factory path cannot be loaded."""


@dataclass(frozen=True)
class ToolOutput:
    """A tool result. ``content`` is what the model sees; ``data`` is optional structured
    output; ``child_usage`` is token usage spent by a child agent on this call; ``fatal``
    marks a :class:`ToolFailure`."""

    content: str
    is_error: bool = False
    data: dict[str, Any] | None = None
    child_usage: Usage | None = None
    fatal: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "is_error": self.is_error,
            "data": self.data,
            "child_usage": self.child_usage.to_dict() if self.child_usage is not None else None,
            "fatal": self.fatal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolOutput:
        child = data.get("child_usage")
        return cls(
            content=str(data.get("content") or ""),
            is_error=bool(data.get("is_error", False)),
            data=data.get("data"),
            child_usage=Usage.from_dict(child) if child is not None else None,
            fatal=bool(data.get("fatal", False)),
        )

    @classmethod
    def error(cls, message: str) -> ToolOutput:
        return cls(content=message, is_error=True)


@dataclass
class ToolContext:
    """What a handler gets besides its arguments.

    ``idempotency_key`` is the tool attempt's replay key: pass it to external systems that
    deduplicate. ``host`` holds host services (``spawn_agent``, ...). Use :meth:`effect` and
    :meth:`sleep` for nondeterministic sub-steps so a re-run after a crash sees the same values.
    """

    session_id: str
    turn_id: str
    call_id: str
    idempotency_key: str
    journal: EffectJournal
    host: Mapping[str, Any] = field(default_factory=dict)
    depth: int = 0
    is_cancelled: Callable[[], bool] = lambda: False

    def effect(self, name: str, run: Callable[[], dict[str, Any]], *, kind: str = "tool_effect") -> dict[str, Any]:
        """Run ``run`` once per tool call: its outcome is journaled under ``{idempotency_key}/{name}``."""
        outcome, _ = run_effect(self.journal, f"{self.idempotency_key}/{name}", kind=kind, run=run)
        return outcome

    def sleep(self, seconds: float, *, name: str = "sleep") -> bool:
        """Durable sleep (see :func:`lashops.runtime.effects.durable_sleep`); ``False`` if cancelled."""
        return durable_sleep(self.journal, f"{self.idempotency_key}/{name}", seconds, is_cancelled=self.is_cancelled)


ToolHandler = Callable[[dict[str, Any], ToolContext], "ToolOutput | str | dict[str, Any]"]
Availability = Callable[[Mapping[str, Any], int], bool]


@dataclass(frozen=True)
class Tool:
    """A callable tool. ``idempotent`` says re-running after a crash is harmless;
    ``concurrent_safe`` lets it run in parallel with other concurrent-safe calls of one step;
    ``available(host, depth)`` hides it when it cannot work (e.g. no host service)."""

    name: str
    description: str
    handler: ToolHandler
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    idempotent: bool = False
    concurrent_safe: bool = False
    available: Availability | None = None

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def is_available(self, host: Mapping[str, Any], depth: int) -> bool:
        return self.available is None or bool(self.available(host, depth))


class ToolCatalog:
    """The tools of one session. Membership is availability: what is in the catalog (and
    passes its ``available`` check) is offered to the model. ``refresh()`` bumps the
    generation so the host can tell which catalog a turn saw."""

    def __init__(self, tools: Iterable[Tool] = (), *, generation: int = 0) -> None:
        self._tools: dict[str, Tool] = {}
        self.generation = generation
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def refresh(self, tools: Iterable[Tool] | None = None) -> int:
        """Replace the membership (when ``tools`` is given) and bump the generation."""
        if tools is not None:
            self._tools = {}
            for tool in tools:
                self.add(tool)
        self.generation += 1
        return self.generation

    def effective(self, *, host: Mapping[str, Any], depth: int, extra: Iterable[Tool] = ()) -> dict[str, Tool]:
        """The tools offered for one turn: catalog plus plugin tools, filtered by availability."""
        merged = {**self._tools, **{tool.name: tool for tool in extra}}
        return {name: tool for name, tool in merged.items() if tool.is_available(host, depth)}


def resolve_dotted_path(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ToolProviderError(f"{path!r} is not a dotted path like 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolProviderError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ToolProviderError(f"{module_name!r} has no attribute {attr!r} (from {path!r})") from None


def load_tool_providers(dotted_paths: Iterable[str]) -> list[Tool]:
    """Tools from providers named by dotted paths (``pkg.mod:func`` or ``pkg.mod.func``).
    Each provider is a callable taking no arguments and returning an iterable of :class:`Tool`.
    Later tools with the same name replace earlier ones."""
    tools: dict[str, Tool] = {}
    for path in dotted_paths:
        provider = resolve_dotted_path(path)
        if not callable(provider):
            raise ToolProviderError(f"tool provider {path!r} is not callable")
        for tool in provider():
            if not isinstance(tool, Tool):
                raise ToolProviderError(f"tool provider {path!r} returned {type(tool).__name__}, not Tool")
            tools[tool.name] = tool
    return list(tools.values())


DEFAULT_TOOL_PROVIDERS: tuple[str, ...] = ("lashops.runtime.builtin_tools:builtin_tools",)


def build_catalog(dotted_paths: Iterable[str] = DEFAULT_TOOL_PROVIDERS, *, generation: int = 0) -> ToolCatalog:
    """A session catalog from tool provider paths (the built-ins by default)."""
    return ToolCatalog(load_tool_providers(dotted_paths), generation=generation)


def coerce_output(value: ToolOutput | str | dict[str, Any] | None) -> ToolOutput:
    if isinstance(value, ToolOutput):
        return value
    if value is None:
        return ToolOutput(content="")
    if isinstance(value, str):
        return ToolOutput(content=value)
    if isinstance(value, dict):
        return ToolOutput(content=json.dumps(value, sort_keys=True, default=str), data=value)
    return ToolOutput(content=str(value))


def parse_arguments(tool: Tool, call: ToolCall) -> dict[str, Any] | ToolOutput:
    """Parsed and schema-checked arguments, or the error result to give the model."""
    raw = call.arguments.strip() or "{}"
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as exc:
        return ToolOutput.error(f"invalid JSON arguments for tool {call.name!r}: {exc.msg} at position {exc.pos}")
    if not isinstance(args, dict):
        return ToolOutput.error(f"arguments for tool {call.name!r} must be a JSON object, got {type(args).__name__}")
    validator_cls = jsonschema.validators.validator_for(tool.parameters)
    error = jsonschema.exceptions.best_match(validator_cls(tool.parameters).iter_errors(args))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return ToolOutput.error(f"invalid arguments for tool {call.name!r} at {where}: {error.message}")
    return args


def invoke_tool(tool: Tool | None, call: ToolCall, ctx: ToolContext, *, known: Iterable[str] = ()) -> ToolOutput:
    """Run one tool call; never raises (except BaseException such as KeyboardInterrupt)."""
    if tool is None:
        names = ", ".join(sorted(known)) or "none"
        return ToolOutput.error(f"unknown tool {call.name!r}; available tools: {names}")
    args = parse_arguments(tool, call)
    if isinstance(args, ToolOutput):
        return args
    try:
        return coerce_output(tool.handler(args, ctx))
    except ToolFailure as exc:
        return ToolOutput(content=f"tool {call.name!r} failed: {exc}", is_error=True, fatal=True)
    except Exception as exc:
        return ToolOutput.error(f"tool {call.name!r} raised {type(exc).__name__}: {exc}")
