from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class ModelSpecIn(Schema):
    provider: str = Field(..., min_length=1, max_length=40, examples=["scripted"])
    model: str = Field(..., min_length=1, max_length=200, examples=["scripted-1"])
    parameters: dict[str, Any] = Field(default_factory=dict)


class SessionIn(Schema):
    id: str | None = Field(
        None, max_length=64, description="Client-supplied id (idempotent open); generated when absent."
    )
    model: ModelSpecIn | None = None
    system_prompt: str = ""
    prompt_layers: list[str] = Field(default_factory=list)
    mode: Literal["standard"] = "standard"
    parent_id: str | None = Field(None, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionStatusIn(Schema):
    status: Literal["open", "parked", "closed"]


class SessionOut(Schema):
    id: str
    mode: str
    model: dict[str, Any]
    system_prompt: str
    prompt_layers: list[str]
    parent_id: str | None
    depth: int
    status: str
    head_revision: int
    leaf_node_id: str
    active_turn_id: str
    tool_catalog_generation: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_cost_usd(obj: Any) -> str:
        return str(obj.cost_usd)


class TurnIn(Schema):
    input: str = Field(..., description="The user's message.")
    source_key: str = Field("", max_length=200, description="Idempotency key: the same key returns the same turn.")
    background: bool = Field(False, description="Answer 202 at once and run the turn on the runner.")


class TurnOut(Schema):
    id: str
    session_id: str
    index: int
    status: str
    outcome: str
    stop_reason: str
    stop_detail: str
    input_text: str
    final_text: str
    steps: int
    background: bool
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    reasoning_output_tokens: int
    child_input_tokens: int
    child_output_tokens: int
    cost_usd: str
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_cost_usd(obj: Any) -> str:
        return str(obj.cost_usd)


class InputIn(Schema):
    text: str
    source_key: str = Field(..., min_length=1, max_length=200)


class InputOut(Schema):
    id: int
    source_key: str
    text: str
    status: str
    claimed_by: str
    accepted_by: str
    created_at: datetime


class CommandIn(Schema):
    kind: Literal["refresh_tool_catalog", "reset_session"]
    source_key: str = Field(..., min_length=1, max_length=150)
    reason: str = Field("", max_length=500)


class CommandOut(Schema):
    id: int
    kind: str
    source_key: str
    reason: str
    status: str
    applied_at: datetime | None


class NodeOut(Schema):
    node_id: str
    turn_id: str
    seq: int
    kind: str
    parent_id: str
    caused_by: str
    payload: dict[str, Any]


class TranscriptOut(Schema):
    session_id: str
    head_revision: int
    leaf_node_id: str
    nodes: list[NodeOut]


class AttachmentOut(Schema):
    sha256: str
    size: int
    content_type: str
    filename: str
