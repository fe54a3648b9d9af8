"""API shapes for mobs (In and Out kept apart)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class MobIn(Schema):
    toml: str = Field(..., min_length=1, description="The whole TOML definition.")


class MobOut(Schema):
    mob_id: str
    revision: int
    bootstrap_mode: str
    warm_concurrency: int
    max_sessions: int
    session_count: int
    shutting_down: bool
    profiles: list[str]
    orchestrator: str
    created_at: datetime
    updated_at: datetime


class MobLoadOut(MobOut):
    created_revision: bool
    reconcile: dict[str, list[str]]


class MobDetailOut(MobOut):
    definition: dict[str, Any]
    toml: str
    bootstrap: dict[str, Any]


class DrainIn(Schema):
    shutting_down: bool = Field(True, description="true drains (new sends and dispatches refused); false resumes")


class BootstrapIn(Schema):
    mode: Literal["eager", "lazy", "lazy_background_warm"]
    concurrency: int | None = Field(
        None, ge=1, le=16, description="lazy_background_warm: identities warmed at once (1 to 16)."
    )


class IdentityIn(Schema):
    key: str = Field(..., min_length=1, max_length=150)
    profile: str = Field(..., min_length=1, max_length=63)
    addressability: Literal["addressable", "internal_only"] = "addressable"
    display_name: str = Field("", max_length=200)
    labels: dict[str, str] = {}
    context: dict[str, Any] = {}
    initial_message: str = ""


class ContinuityOut(Schema):
    session_id: str
    generation: int
    checkpoint_version: int
    fencing_token: int


class LeaseOut(Schema):
    holder: str
    token: int
    expires_at: datetime | None


class IdentityOut(Schema):
    key: str
    profile: str
    addressability: str
    display_name: str
    labels: dict[str, str]
    context: dict[str, Any]
    source: str
    revision: int
    state: str
    broken_reason: str
    health: str
    session_id: str
    continuity: ContinuityOut | None
    lease: LeaseOut | None


class SendIn(Schema):
    text: str = Field(..., min_length=1)
    idempotency_key: str = Field("", max_length=200)


class DispatchIn(SendIn):
    origin: Literal["connector", "scheduler", "policy", "flow", "system"]


class AcceptanceOut(Schema):
    accepted: bool
    identity: str
    origin: str
    kind: str
    cursor: str
    frame_id: int
    replayed: bool


class EdgeOut(Schema):
    a: str
    b: str
    source: str


class FrameOut(Schema):
    cursor: str
    identity: str
    session_id: str
    kind: str
    status: str
    frame_version: int
    source_kind: str
    payload: dict[str, Any]
    delivery_attempts: int = Field(0, description="Delivery attempts started (0 for frames that are not delivered).")
    next_attempt_at: datetime | None = Field(
        None, description="accepted: when the next attempt is due; dispatching: the attempt's deadline."
    )
    last_error: str = Field("", description="Why the last delivery attempt failed.")
    created_at: datetime
    updated_at: datetime


class ConsolePageOut(Schema):
    frames: list[FrameOut]
    next_cursor: str
    latest_cursor: str
    gap: bool = Field(
        False, description="True when ?after= points into pruned history: no frames; continue from next_cursor."
    )
    pruned_through: str = Field("console:0", description="Frames at or below this cursor were deleted by retention.")


class MobEventOut(Schema):
    seq: int
    kind: str
    identity: str
    data: dict[str, Any]
    ts: datetime


class MobEventPageOut(Schema):
    events: list[MobEventOut]
    next_after_seq: int
    latest_seq: int
