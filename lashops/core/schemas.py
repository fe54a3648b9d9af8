from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema


class ErrorBody(Schema):
    code: str
    message: str
    details: Any = None


class ErrorOut(Schema):
    error: ErrorBody


class WorkspaceOut(Schema):
    slug: str
    name: str
    created_at: datetime


class ApiKeyIn(Schema):
    name: str = Field(..., min_length=1, max_length=200)


class ApiKeyOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(..., description="The plaintext key. Shown once; store it now.")


class EventOut(Schema):
    cursor: int
    type: str
    ts: datetime
    workspace: str
    subject: dict[str, Any]
    data: dict[str, Any]


class EventPageOut(Schema):
    events: list[EventOut]
    next_cursor: int = Field(..., description="Pass as ?after= to continue; equals the input when nothing is new.")
    latest_cursor: int
    gap: bool = Field(False, description="True when ?after= points into pruned history; reload state.")


class HealthComponent(Schema):
    ok: bool
    detail: dict[str, Any] = {}


class HealthOut(Schema):
    status: str
    database: HealthComponent
    channel_layer: HealthComponent
    runner: HealthComponent
    workers: HealthComponent | None = None
    versions: dict[str, str]


# Bounds shared by every cursor and page size the API reads (documented in OpenAPI through them).
def cursor_field(default: int = 0, description: str = "Return what comes after this cursor.") -> Any:
    from lashops.core.validation import BIGINT_MAX

    return Field(default, ge=0, le=BIGINT_MAX, description=description)


def page_limit_field(default: int = 200, maximum: int = 1000) -> Any:
    return Field(default, ge=1, le=maximum, description=f"At most this many items (1 to {maximum}).")


class WsTicketOut(Schema):
    ticket: str = Field(description="Open one /ws/ path with ?ticket=<ticket>; it is spent by that handshake.")
    expires_at: datetime
    expires_in: float = Field(description="Seconds left to use it.")
    workspace: str
