"""Transcript nodes: what a turn adds to a session graph, and how nodes become a prompt.

The host stores each :class:`NodeDraft` as a row and hands the rows back (as dicts with at
least ``id``, ``kind`` and ``payload``) on the next turn.

Payloads by kind:

- ``user``: ``{"text": str}`` (plus ``"boundary": True`` for input injected mid-turn)
- ``assistant``: ``{"text": str, "step": int, "model": str}``
- ``tool_call``: ``{"call_id": str, "name": str, "arguments": str}`` (raw JSON text)
- ``tool_result``: ``{"call_id": str, "name": str, "content": str, "is_error": bool}``
- ``system``: ``{"event": "turn.stopped", "stop_reason": str, "detail": str}`` (evidence, not prompt)
- ``plugin``: plugin-defined, never part of the prompt
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lashops.runtime.types import Message, ToolCall

NodeKind = Literal["user", "assistant", "tool_call", "tool_result", "system", "plugin"]
NODE_KINDS: tuple[str, ...] = ("user", "assistant", "tool_call", "tool_result", "system", "plugin")


@dataclass(frozen=True)
class NodeDraft:
    """One new transcript node. ``id`` is ``{turn_id}:{n}`` (n from 0, in creation order);
    ``parent_id`` is the previous node (the first node's parent is the session leaf);
    ``caused_by`` is the node that led to this one (the tool call of a result, ...)."""

    id: str
    kind: NodeKind
    parent_id: str | None
    caused_by: str | None
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "caused_by": self.caused_by,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeDraft:
        return cls(
            id=str(data["id"]),
            kind=data["kind"],
            parent_id=data.get("parent_id"),
            caused_by=data.get("caused_by"),
            payload=dict(data.get("payload") or {}),
        )


def _as_node(item: NodeDraft | Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if isinstance(item, NodeDraft):
        return item.kind, item.payload
    return str(item["kind"]), item.get("payload") or {}


def transcript_to_messages(nodes: Iterable[NodeDraft | Mapping[str, Any] | Message]) -> list[Message]:
    """Provider messages for stored nodes, in order.

    ``tool_call`` nodes attach to the assistant message right before them (an assistant
    message with empty text is made when there is none); ``system`` and ``plugin`` nodes are
    evidence, not prompt, and are skipped. :class:`Message` items pass through unchanged.
    """
    messages: list[Message] = []
    for item in nodes:
        if isinstance(item, Message):
            messages.append(item)
            continue
        kind, payload = _as_node(item)
        if kind == "user":
            messages.append(Message(role="user", content=str(payload.get("text") or "")))
        elif kind == "assistant":
            messages.append(Message(role="assistant", content=str(payload.get("text") or "")))
        elif kind == "tool_call":
            call = ToolCall(
                id=str(payload["call_id"]), name=str(payload["name"]), arguments=str(payload.get("arguments") or "")
            )
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = Message(role="assistant", content=last.content, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message(role="assistant", content="", tool_calls=(call,)))
        elif kind == "tool_result":
            messages.append(
                Message(
                    role="tool",
                    content=str(payload.get("content") or ""),
                    tool_call_id=str(payload["call_id"]),
                    name=payload.get("name"),
                    is_error=bool(payload.get("is_error", False)),
                )
            )
    return messages


def last_node_id(nodes: Iterable[NodeDraft | Mapping[str, Any] | Message]) -> str | None:
    leaf = None
    for item in nodes:
        if isinstance(item, NodeDraft):
            leaf = item.id
        elif isinstance(item, Mapping) and item.get("id") is not None:
            leaf = str(item["id"])
    return leaf
