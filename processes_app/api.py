"""/api/processes and /api/triggers. Thin: parse, call one service or selector, render."""

import copy

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate

from lashops.core.auth import WorkspaceRequest
from lashops.core.errors import NotFound
from lashops.core.pagination import BoundedLimitOffsetPagination
from lashops.core.schemas import ErrorOut, cursor_field, page_limit_field
from lashops.core.selectors import event_page
from lashops.core.validation import BIGINT_MAX
from processes_app import selectors, services, triggers
from processes_app.models import Process
from processes_app.schemas import (
    CancelIn,
    ChangePageOut,
    CompleteIn,
    OccurrenceCreatedOut,
    OccurrenceIn,
    OccurrenceOut,
    ProcessBatchIn,
    ProcessBatchOut,
    ProcessCompletedOut,
    ProcessEventPageOut,
    ProcessIn,
    ProcessOut,
    ProcessStartedOut,
    ScheduleIn,
    ScheduleOut,
    SignalIn,
    SignalOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatchIn,
    TriggerEventIn,
    TriggerEventOut,
)

router = Router(tags=["processes"])
triggers_router = Router(tags=["triggers"])


def _api_provenance(request: WorkspaceRequest) -> dict[str, str]:
    return {"host": "api", "api_key": getattr(getattr(request, "api_key", None), "prefix", "")}


def _with_lease(proc: Process) -> Process:
    proc.lease_row = selectors.process_lease(process_id=proc.id)  # type: ignore[attr-defined]  # read by the Out schema
    return proc


def _process_or_404(request: WorkspaceRequest, process_id: str) -> Process:
    proc = selectors.process_get(workspace=request.workspace, process_id=process_id)
    if proc is None:
        raise NotFound(f"no process {process_id!r}")
    return proc


class ProcessFilter(Schema):
    status: str = ""
    kind: str = ""
    definition: str = ""
    session: str = ""


@router.post("", response={200: ProcessStartedOut, 201: ProcessStartedOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut})
def process_start(request: WorkspaceRequest, payload: ProcessIn):
    """Start a process. Idempotent by ``id``: the same registration answers 200 with the existing
    process; a different registration under the same id answers 409 ``registration_conflict``."""
    proc, created = services.process_start(
        workspace=request.workspace,
        process_id=payload.id,
        kind=payload.kind,
        definition=payload.definition,
        input=payload.input,
        disposition=payload.disposition,
        wake_session_id=payload.wake_session,
        grant_session_ids=payload.grant_sessions,
        timeout_seconds=payload.timeout_seconds,
        provenance=_api_provenance(request),
    )
    proc = selectors.process_get(workspace=request.workspace, process_id=proc.pk)  # type: ignore[assignment]  # the same row, read back
    proc.created_now = created  # type: ignore[attr-defined]  # read by the Out schema
    return Status(201 if created else 200, proc)


@router.post(
    "/batch", response={200: ProcessBatchOut, 201: ProcessBatchOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}
)
def process_start_batch(request: WorkspaceRequest, payload: ProcessBatchIn):
    """Start up to 1,000 processes in one transaction (fan-out). Each is idempotent by ``id`` as
    in a single start; 201 when any was created, 200 when all existed; all or nothing: 409
    ``registration_conflict`` (nothing started) if any id exists with a different registration."""
    started = services.process_start_many(
        workspace=request.workspace,
        processes=[
            services.ProcessStartSpec(
                process_id=item.id,
                kind=item.kind,
                timeout_seconds=item.timeout_seconds,
                definition=item.definition,
                input=item.input,
                disposition=item.disposition,
                wake_session_id=item.wake_session,
                grant_session_ids=tuple(item.grant_sessions),
            )
            for item in payload.processes
        ],
        provenance=_api_provenance(request),
    )
    rows = selectors.process_list(workspace=request.workspace).filter(pk__in=[p.pk for p, _ in started])
    by_id = {p.pk: p for p in rows.prefetch_related("grants")}
    out = []
    for proc, created in started:
        row = copy.copy(by_id[proc.pk])
        row.created_now = created  # type: ignore[attr-defined]  # read by the Out schema
        out.append(row)
    return Status(201 if any(created for _, created in started) else 200, {"processes": out})


@router.get("", response=list[ProcessOut])
@paginate(BoundedLimitOffsetPagination)
def process_list(request: WorkspaceRequest, filters: Query[ProcessFilter]):
    return selectors.process_list(
        workspace=request.workspace,
        status=filters.status,
        kind=filters.kind,
        definition=filters.definition,
        session_id=filters.session,
    ).prefetch_related("grants")


class ChangesQuery(Schema):
    since: int = cursor_field(description="Return the changes after this workspace cursor.")
    limit: int = page_limit_field()


@router.get("/changes", response={200: ChangePageOut, 422: ErrorOut})
def process_changes(request: WorkspaceRequest, query: Query[ChangesQuery]):
    """Every process transition after a workspace cursor, in commit order (cursors are allocated
    under a row lock, so a reader never sees a later change before an earlier one commits)."""
    page = event_page(workspace=request.workspace, after=query.since, limit=query.limit, process_only=True)
    page["changes"] = page.pop("events")
    return page


@router.get("/{process_id}", response={200: ProcessOut, 404: ErrorOut})
def process_detail(request: WorkspaceRequest, process_id: str):
    return _with_lease(_process_or_404(request, process_id))


class EventsQuery(Schema):
    after: int = cursor_field(description="Return the events after this sequence number.")
    limit: int = page_limit_field()


@router.get("/{process_id}/events", response={200: ProcessEventPageOut, 404: ErrorOut, 422: ErrorOut})
def process_event_list(request: WorkspaceRequest, process_id: str, query: Query[EventsQuery]):
    """The process's own event log after a sequence number."""
    proc = _process_or_404(request, process_id)
    rows = list(selectors.process_events(process=proc, after_seq=query.after, limit=query.limit))
    return {"events": rows, "next_seq": rows[-1].seq if rows else query.after}


@router.post("/{process_id}/signal", response={202: SignalOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut})
def process_signal(request: WorkspaceRequest, process_id: str, payload: SignalIn):
    """Queue a signal (422 for an undeclared name or a payload its schema rejects; 409 once the
    process has finished)."""
    event = services.process_signal(
        workspace=request.workspace, process_id=process_id, name=payload.name, payload=payload.payload
    )
    return Status(202, {"process_id": process_id, "name": payload.name, "seq": event.seq})


@router.post("/{process_id}/complete", response={200: ProcessCompletedOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut})
def process_complete(request: WorkspaceRequest, process_id: str, payload: CompleteIn):
    """End an externally owned process with its owner's result: ``output`` completes it, ``error``
    fails it. The parent waiting on it (``ctx.run_external``) continues. Idempotent: the same
    result again (same ``idempotency_key``, or none) answers 200 with ``replayed`` true; another
    result is 409 ``completion_conflict``. 409 ``not_externally_owned`` for a process its
    definition runs, ``process_finished`` for one that ended otherwise (cancelled, abandoned),
    ``deadline_exceeded`` once its ``timeout_seconds`` have passed."""
    proc, replayed = services.process_complete(
        workspace=request.workspace,
        process_id=process_id,
        output=payload.output,
        error=payload.error.model_dump() if payload.error is not None else None,
        idempotency_key=payload.idempotency_key,
        via=f"api:{_api_provenance(request)['api_key']}".rstrip(":"),
        path="body.payload",
    )
    proc = _with_lease(_process_or_404(request, proc.pk))
    proc.replayed_now = replayed  # type: ignore[attr-defined]  # read by the Out schema
    return proc


@router.post("/{process_id}/cancel", response={202: ProcessOut, 404: ErrorOut, 409: ErrorOut})
def process_cancel(request: WorkspaceRequest, process_id: str, payload: CancelIn | None = None):
    """Request cancellation: a parked process ends at once, a running one at its next step."""
    body = payload or CancelIn()  # type: ignore[call-arg]  # reason has a default (pydantic Field)
    proc = services.process_cancel(
        workspace=request.workspace, process_id=process_id, cascade=body.cascade, reason=body.reason
    )
    return Status(202, _with_lease(_process_or_404(request, proc.pk)))


# --- triggers ---------------------------------------------------------------------------


@triggers_router.post("/events", response={200: TriggerEventOut, 422: ErrorOut})
def trigger_event_declare(request: WorkspaceRequest, payload: TriggerEventIn):
    """Declare (or update) a trigger event type."""
    return triggers.trigger_event_declare(
        workspace=request.workspace,
        name=payload.name,
        payload_schema=payload.payload_schema,
        description=payload.description,
    )


@triggers_router.get("/events", response=list[TriggerEventOut])
@paginate(BoundedLimitOffsetPagination)
def trigger_event_list(request: WorkspaceRequest):
    return selectors.trigger_events(workspace=request.workspace)


@triggers_router.post("/subscriptions", response={201: SubscriptionOut, 404: ErrorOut, 422: ErrorOut})
def trigger_subscribe(request: WorkspaceRequest, payload: SubscriptionIn):
    sub = triggers.trigger_subscribe(
        workspace=request.workspace,
        event_name=payload.event,
        definition=payload.definition,
        input_template=payload.input_template,
        wake_session_id=payload.wake_session,
        disposition=payload.disposition,
        name=payload.name,
    )
    return Status(201, sub)


@triggers_router.get("/subscriptions", response=list[SubscriptionOut])
@paginate(BoundedLimitOffsetPagination)
def trigger_subscription_list(request: WorkspaceRequest):
    return selectors.trigger_subscriptions(workspace=request.workspace)


@triggers_router.patch("/subscriptions/{subscription_id}", response={200: SubscriptionOut, 404: ErrorOut})
def trigger_subscription_update(
    request: WorkspaceRequest, payload: SubscriptionPatchIn, subscription_id: int = Path(..., ge=1, le=BIGINT_MAX)
):
    """Enable or disable a subscription (disabling keeps already delivered work)."""
    sub = triggers.trigger_subscription_set_enabled(
        workspace=request.workspace, subscription_id=subscription_id, enabled=payload.enabled
    )
    return sub


@triggers_router.post(
    "/occurrences",
    response={200: OccurrenceCreatedOut, 201: OccurrenceCreatedOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
)
def occurrence_emit(request: WorkspaceRequest, payload: OccurrenceIn):
    """Emit an occurrence: one process per enabled subscription, exactly once per occurrence id
    (a repeat answers 200 with the same deliveries; a different payload answers 409)."""
    occ, created = triggers.occurrence_emit(
        workspace=request.workspace,
        event_name=payload.event,
        occurrence_id=payload.occurrence_id,
        payload=payload.payload,
    )
    occ = selectors.trigger_occurrences(workspace=request.workspace).get(pk=occ.pk)
    occ.created_now = created  # type: ignore[attr-defined]  # read by the Out schema
    return Status(201 if created else 200, occ)


@triggers_router.get("/occurrences", response=list[OccurrenceOut])
@paginate(BoundedLimitOffsetPagination)
def occurrence_list(request: WorkspaceRequest):
    return selectors.trigger_occurrences(workspace=request.workspace)


@triggers_router.post("/schedules", response={200: ScheduleOut, 404: ErrorOut, 422: ErrorOut})
def schedule_save(request: WorkspaceRequest, payload: ScheduleIn):
    """Create or update a cron schedule (by name); it emits occurrences of ``event``."""
    schedule = triggers.schedule_save(
        workspace=request.workspace,
        name=payload.name,
        event_name=payload.event,
        cron=payload.cron,
        payload=payload.payload,
        enabled=payload.enabled,
    )
    return schedule


@triggers_router.get("/schedules", response=list[ScheduleOut])
@paginate(BoundedLimitOffsetPagination)
def schedule_list(request: WorkspaceRequest):
    return selectors.cron_schedules(workspace=request.workspace)
