"""Value types shared by the engine, the providers and the stores.

Everything here is a frozen dataclass that round-trips through plain JSON
(``to_dict`` / ``from_dict``), because effect outcomes, nodes and usage are journaled
as JSON by whichever store the host plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class Usage:
    """Token usage in lash's five buckets (reasoning is a subset of output)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(**{f.name: int(data.get(f.name) or 0) for f in fields(cls)})


@dataclass(frozen=True)
class ToolSpec:
    """What the model sees of a tool: name, description, JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the raw JSON text the model produced;
    it may be invalid JSON, which the engine reports back to the model as a tool error."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=str(data.get("arguments") or ""))


@dataclass(frozen=True)
class Message:
    """One prompt message in a provider-neutral shape.

    - ``system`` / ``user``: ``content`` only.
    - ``assistant``: ``content`` (may be empty) and zero or more ``tool_calls``.
    - ``tool``: the result of one call: ``tool_call_id``, ``name``, ``content``, ``is_error``.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        if self.is_error:
            data["is_error"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
            is_error=bool(data.get("is_error", False)),
        )


@dataclass(frozen=True)
class ModelSpec:
    """Which model a session talks to. ``provider`` names a registered provider
    (``scripted``, ``openai``, ``anthropic``); ``parameters`` are passed through
    (temperature, max_tokens, and for ``scripted`` the script or its name)."""

    provider: str
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(provider=data["provider"], model=data["model"], parameters=dict(data.get("parameters") or {}))


@dataclass(frozen=True)
class ModelRequest:
    """One model call: the full prompt, the tool catalog and pass-through parameters.

    ``attempt`` is the 1-based attempt number of this logical call (the engine retries
    transient provider errors); real providers ignore it, the scripted one uses it to
    fail deterministically on chosen attempts.
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1


FinishReason = Literal["stop", "tool_calls", "length", "error"]


@dataclass(frozen=True)
class ModelResponse:
    """The settled result of one model call (the streamed deltas concatenated)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": self.usage.to_dict(),
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            text=data.get("text") or "",
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            usage=Usage.from_dict(data.get("usage")),
            finish_reason=data.get("finish_reason") or "stop",
        )
