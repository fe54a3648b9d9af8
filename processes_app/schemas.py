from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import field_validator, model_validator

from lashops.core.schemas import EventOut

# The longest deadline an external process may be given (a float past this overflows timedelta).
MAX_TIMEOUT_SECONDS = 366 * 24 * 3600
DispositionIn = Literal["rerunnable", "owner_bound", "externally_owned"]


class ProcessIn(Schema):
    kind: Literal["definition", "external"] = Field(
        "definition",
        description="external: work an outside system does and ends with POST /api/processes/{id}/complete "
        "(needs disposition externally_owned; definition is then a free label).",
    )
    definition: str = Field(..., min_length=1, max_length=200)
    input: Any = Field(default_factory=dict)
    disposition: DispositionIn = Field(..., description="Required: what recovery may do with this process.")
    id: str | None = Field(None, max_length=64, description="Your id (idempotency key). Generated when omitted.")
    wake_session: str = Field("", max_length=64, description="A session that receives emitted events as input.")
    grant_sessions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"uniqueItems": True},
        description="Sessions that may see and control it (each once).",
    )
    timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="externally_owned only: fail with deadline_exceeded unless completed within this time "
        "(at most 366 days).",
    )

    @field_validator("grant_sessions")
    @classmethod
    def _each_session_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"each session may be granted once; repeated: {', '.join(repeated)}")
        return value


class ProcessBatchIn(Schema):
    processes: list[ProcessIn] = Field(..., min_length=1, max_length=1000)


class WaitOut(Schema):
    kind: str
    until: datetime | None = None
    signal: str = ""
    child: str = ""


class LeaseOut(Schema):
    holder: str
    token: int
    expires_at: datetime | None


class ProcessOut(Schema):
    id: str
    kind: str
    definition: str
    definition_version: int
    disposition: str
    status: str
    wait: WaitOut | None
    input: Any
    output: Any
    error: Any
    provenance: dict[str, Any]
    wake_session: str
    parent: str | None
    grants: list[str]
    first_started_at: datetime | None
    cancel_requested_at: datetime | None
    abandon_requested_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    lease: LeaseOut | None = None

    @staticmethod
    def resolve_definition(obj: Any) -> str:
        return obj.definition_name

    @staticmethod
    def resolve_wait(obj: Any) -> dict[str, Any] | None:
        if not obj.wait_kind:
            return None
        return {"kind": obj.wait_kind, "until": obj.wait_until, "signal": obj.wait_signal, "child": obj.wait_child}

    @staticmethod
    def resolve_wake_session(obj: Any) -> str:
        return obj.wake_session_id

    @staticmethod
    def resolve_parent(obj: Any) -> str | None:
        return obj.parent_id

    @staticmethod
    def resolve_grants(obj: Any) -> list[str]:
        return [g.session_id for g in obj.grants.all() if g.revoked_at is None]

    @staticmethod
    def resolve_lease(obj: Any) -> Any:
        return getattr(obj, "lease_row", None)


class ProcessStartedOut(ProcessOut):
    created: bool = Field(False, description="False when an identical registration already existed.")

    @staticmethod
    def resolve_created(obj: Any) -> bool:
        return bool(getattr(obj, "created_now", False))


class ProcessBatchOut(Schema):
    processes: list[ProcessStartedOut]


class ProcessEventOut(Schema):
    seq: int
    type: str
    data: dict[str, Any]
    ts: datetime


class ProcessEventPageOut(Schema):
    events: list[ProcessEventOut]
    next_seq: int


class SignalIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    payload: Any = None


class SignalOut(Schema):
    process_id: str
    name: str
    seq: int


class CompletionErrorIn(Schema):
    code: str = Field(..., min_length=1, max_length=100, description="Machine-readable failure code.")
    message: str = Field("", max_length=2000)
    details: Any = None


class CompleteIn(Schema):
    # Stated in the document too: exactly one of the two keys.
    model_config = {"json_schema_extra": {"oneOf": [{"required": ["output"]}, {"required": ["error"]}]}}

    output: Any = Field(None, description="The result: the process ends completed with it.")
    error: CompletionErrorIn | None = Field(None, description="Or a failure: the process ends failed with it.")
    idempotency_key: str = Field(
        "",
        max_length=200,
        description="Repeating a completion with the same key (or the same result) answers the stored result.",
    )

    @model_validator(mode="after")
    def _says_how_it_ended(self) -> CompleteIn:
        # Explicit, so that an empty or malformed body never completes anything.
        if not self.model_fields_set & {"output", "error"}:
            raise ValueError('give "output" (completes the process, may be null) or "error" (fails it)')
        return self


class ProcessCompletedOut(ProcessOut):
    replayed: bool = Field(False, description="True when this repeated an earlier identical completion.")

    @staticmethod
    def resolve_replayed(obj: Any) -> bool:
        return bool(getattr(obj, "replayed_now", False))


class CancelIn(Schema):
    cascade: bool = False
    reason: str = Field("", max_length=500)


class ChangePageOut(Schema):
    changes: list[EventOut]
    next_cursor: int = Field(..., description="Pass as ?since= to continue.")
    latest_cursor: int
    gap: bool = Field(False, description="True when ?since= points into pruned history; reload the list.")


# --- triggers ---------------------------------------------------------------------------


class TriggerEventIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    description: str = ""
    payload_schema: dict[str, Any] = Field(default_factory=dict)


class TriggerEventOut(Schema):
    name: str
    description: str
    payload_schema: dict[str, Any]
    created_at: datetime


class SubscriptionIn(Schema):
    event: str = Field(..., min_length=1, max_length=100)
    definition: str = Field(..., min_length=1, max_length=200)
    input_template: Any = None
    disposition: DispositionIn = "rerunnable"
    wake_session: str = Field("", max_length=64)
    name: str = Field("", max_length=100)


class SubscriptionOut(Schema):
    id: int
    name: str
    event: str
    definition: str
    input_template: Any
    disposition: str
    wake_session: str
    enabled: bool
    created_at: datetime

    @staticmethod
    def resolve_event(obj: Any) -> str:
        return obj.event.name

    @staticmethod
    def resolve_definition(obj: Any) -> str:
        return obj.definition_name

    @staticmethod
    def resolve_wake_session(obj: Any) -> str:
        return obj.wake_session_id


class SubscriptionPatchIn(Schema):
    enabled: bool


class OccurrenceIn(Schema):
    event: str = Field(..., min_length=1, max_length=100)
    occurrence_id: str = Field(..., min_length=1, max_length=200)
    payload: Any = Field(default_factory=dict)


class DeliveryOut(Schema):
    subscription: int
    process_id: str


class OccurrenceOut(Schema):
    occurrence_id: str
    event: str
    payload: Any
    source: str
    created_at: datetime
    deliveries: list[DeliveryOut]

    @staticmethod
    def resolve_event(obj: Any) -> str:
        return obj.event.name

    @staticmethod
    def resolve_deliveries(obj: Any) -> list[dict[str, Any]]:
        return [{"subscription": d.subscription_id, "process_id": d.process_id} for d in obj.deliveries.all()]


class OccurrenceCreatedOut(OccurrenceOut):
    created: bool = False

    @staticmethod
    def resolve_created(obj: Any) -> bool:
        return bool(getattr(obj, "created_now", False))


class ScheduleIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    event: str = Field(..., min_length=1, max_length=100)
    cron: str = Field(..., min_length=9, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class ScheduleOut(Schema):
    name: str
    event: str
    cron: str
    payload: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None

    @staticmethod
    def resolve_event(obj: Any) -> str:
        return obj.event.name
