"""Plugins: per-session extensions of the turn machine.

A :class:`PluginFactory` (configured by dotted path) builds one :class:`SessionPlugin` per
session. Plugin hooks run on every drive of a turn, replays included, so they must be
deterministic functions of their restored state and their inputs; nondeterministic work
belongs in tools (which are journaled). ``snapshot()`` is committed with the turn and handed
back to ``restore()`` before the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lashops.runtime.tools import Tool, ToolOutput, ToolProviderError, resolve_dotted_path
from lashops.runtime.types import ToolCall


@dataclass(frozen=True)
class TurnContext:
    """What ``before_turn`` / ``after_turn`` see."""

    session_id: str
    turn_id: str
    user_input: str
    depth: int = 0
    host: Mapping[str, Any] = field(default_factory=dict)


class SessionPlugin:
    """Base class with no-op hooks; override what you need. ``id`` keys the plugin's state."""

    id: str = "plugin"

    def prompt_contributions(self) -> list[str]:
        return []

    def tools(self) -> list[Tool]:
        return []

    def before_turn(self, ctx: TurnContext) -> None:
        return None

    def before_tool(self, call: ToolCall) -> ToolOutput | None:
        """Return a :class:`ToolOutput` to block the call (the tool does not run)."""
        return None

    def after_tool(self, call: ToolCall, output: ToolOutput) -> ToolOutput:
        return output

    def after_turn(self, ctx: TurnContext, result: Any) -> None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        return None


class PluginFactory(Protocol):
    id: str

    def build(self, *, session_id: str, options: Mapping[str, Any]) -> SessionPlugin: ...


def load_plugin_factories(dotted_paths: Iterable[str]) -> list[PluginFactory]:
    """Factories named by dotted paths. A path may name a factory instance or a class with
    ``build`` (instantiated without arguments)."""
    factories: list[PluginFactory] = []
    for path in dotted_paths:
        target = resolve_dotted_path(path)
        if isinstance(target, type):
            target = target()
        if not callable(getattr(target, "build", None)):
            raise ToolProviderError(f"plugin factory {path!r} has no build(session_id=, options=) method")
        factories.append(target)
    return factories


def build_session_plugins(
    factories: Iterable[PluginFactory], *, session_id: str, options: Mapping[str, Any] | None = None
) -> list[SessionPlugin]:
    return [factory.build(session_id=session_id, options=dict(options or {})) for factory in factories]


# --- tool-output budget (in the default stack) -------------------------------------------

DEFAULT_MAX_BYTES = 16 * 1024
DEFAULT_MAX_LINES = 400


def truncate_output(text: str, *, max_bytes: int, max_lines: int) -> tuple[str, bool]:
    """Keep the head of ``text`` within both budgets and append a visible marker."""
    encoded = text.encode("utf-8")
    lines = text.splitlines(keepends=True)
    if len(encoded) <= max_bytes and len(lines) <= max_lines:
        return text, False
    kept: list[str] = []
    size = 0
    for line in lines[:max_lines]:
        line_size = len(line.encode("utf-8"))
        if size + line_size > max_bytes:
            room = max_bytes - size
            if room > 0:
                kept.append(line.encode("utf-8")[:room].decode("utf-8", errors="ignore"))
            break
        kept.append(line)
        size += line_size
    head = "".join(kept)
    omitted_bytes = len(encoded) - len(head.encode("utf-8"))
    omitted_lines = len(lines) - len(head.splitlines())
    marker = f"[... truncated: {omitted_bytes} bytes / {omitted_lines} lines omitted by tool-output budget ...]"
    separator = "" if head.endswith("\n") or not head else "\n"
    return f"{head}{separator}{marker}", True


class ToolOutputBudgetPlugin(SessionPlugin):
    id = "tool_output_budget"

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, max_lines: int = DEFAULT_MAX_LINES) -> None:
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.truncated_calls = 0

    def after_tool(self, call: ToolCall, output: ToolOutput) -> ToolOutput:
        content, truncated = truncate_output(output.content, max_bytes=self.max_bytes, max_lines=self.max_lines)
        if not truncated:
            return output
        self.truncated_calls += 1
        return ToolOutput(
            content=content,
            is_error=output.is_error,
            data=output.data,
            child_usage=output.child_usage,
            fatal=output.fatal,
        )

    def snapshot(self) -> dict[str, Any]:
        return {"truncated_calls": self.truncated_calls}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.truncated_calls = int(state.get("truncated_calls", 0))


class ToolOutputBudgetFactory:
    id = "tool_output_budget"

    def build(self, *, session_id: str, options: Mapping[str, Any]) -> SessionPlugin:
        return ToolOutputBudgetPlugin(
            max_bytes=int(options.get("tool_output_max_bytes", DEFAULT_MAX_BYTES)),
            max_lines=int(options.get("tool_output_max_lines", DEFAULT_MAX_LINES)),
        )


def default_plugin_factories() -> list[PluginFactory]:
    return [ToolOutputBudgetFactory()]
