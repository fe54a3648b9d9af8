"""Mob endpoints under /api/mobs. Thin: parse, call one service or selector, render."""

from __future__ import annotations

from typing import Any

from ninja import Field, Path, Query, Router, Schema, Status
from ninja.pagination import paginate

from lashops.core.auth import WorkspaceRequest
from lashops.core.pagination import BoundedLimitOffsetPagination
from lashops.core.schemas import ErrorOut, cursor_field, page_limit_field
from lashops.core.validation import BIGINT_MAX
from mobs_app import delivery, journal, messaging, selectors, services
from mobs_app.models import Mob
from mobs_app.schemas import (
    AcceptanceOut,
    BootstrapIn,
    ConsolePageOut,
    DispatchIn,
    DrainIn,
    EdgeOut,
    FrameOut,
    IdentityIn,
    IdentityOut,
    MobDetailOut,
    MobEventPageOut,
    MobIn,
    MobLoadOut,
    MobOut,
    SendIn,
)

router = Router(tags=["mobs"])
# ``console:<seq>`` or ``<seq>``, seq within a bigint.
CONSOLE_CURSOR = r"^(console:)?[0-9]{1,18}$"
ERRORS = {404: ErrorOut, 409: ErrorOut, 410: ErrorOut, 422: ErrorOut, 503: ErrorOut}


def _mob_out(mob: Mob) -> dict[str, Any]:
    definition = mob.definition
    return {
        "mob_id": mob.mob_id,
        "revision": mob.active_revision.revision if mob.active_revision_id else 0,  # type: ignore[union-attr]  # active_revision_id checked
        "bootstrap_mode": mob.bootstrap_mode,
        "warm_concurrency": mob.warm_concurrency,
        "max_sessions": mob.max_sessions,
        "session_count": mob.session_count,
        "shutting_down": mob.shutting_down,
        "profiles": sorted(definition.get("profiles", {})),
        "orchestrator": definition.get("mob", {}).get("orchestrator", ""),
        "created_at": mob.created_at,
        "updated_at": mob.updated_at,
    }


def _mob(request: WorkspaceRequest, mob_id: str) -> Mob:
    return services.mob_get(workspace=request.workspace, mob_id=mob_id)


@router.post("", response={201: MobLoadOut, 200: MobLoadOut, **ERRORS})
def mob_load(request: WorkspaceRequest, payload: MobIn):
    """Load a TOML definition: creates the mob or a new revision. Every problem is reported at once
    (422 ``invalid_definition``, details with TOML path and line); the active revision stays."""
    result = services.mob_load(workspace=request.workspace, source=payload.toml)
    mob = services.mob_get(workspace=request.workspace, mob_id=result.mob.mob_id)
    body = _mob_out(mob) | {"created_revision": result.created, "reconcile": result.reconcile}
    return Status(201 if result.created else 200, body)


@router.get("", response=list[MobOut])
@paginate(BoundedLimitOffsetPagination)
def mob_list(request: WorkspaceRequest):
    return [_mob_out(m) for m in selectors.mob_list(workspace=request.workspace)]


@router.get("/{mob_id}", response={200: MobDetailOut, **ERRORS})
def mob_detail(request: WorkspaceRequest, mob_id: str):
    mob = _mob(request, mob_id)
    return _mob_out(mob) | {
        "definition": mob.definition,
        "toml": mob.active_revision.source if mob.active_revision_id else "",  # type: ignore[union-attr]  # active_revision_id checked
        "bootstrap": services.bootstrap_status(mob=mob),
    }


@router.post("/{mob_id}/bootstrap", response={202: dict, **ERRORS})
def mob_bootstrap(request: WorkspaceRequest, mob_id: str, payload: BootstrapIn):
    """eager | lazy | lazy_background_warm (concurrency 1..16). Returns the bootstrap status."""
    status = services.mob_bootstrap(mob=_mob(request, mob_id), mode=payload.mode, concurrency=payload.concurrency)
    return Status(202, status)


@router.get("/{mob_id}/bootstrap", response={200: dict, **ERRORS})
def mob_bootstrap_status(request: WorkspaceRequest, mob_id: str):
    return services.bootstrap_status(mob=_mob(request, mob_id))


@router.post("/{mob_id}/drain", response={200: MobOut, **ERRORS})
def mob_drain(request: WorkspaceRequest, mob_id: str, payload: DrainIn):
    """Drain: new sends, dispatches and peer messages are refused with 409 ``shutting_down``
    (accepted ones still deliver). ``{"shutting_down": false}`` resumes."""
    services.mob_drain(mob=_mob(request, mob_id), shutting_down=payload.shutting_down)
    return _mob_out(_mob(request, mob_id))


class IdentityQuery(Schema):
    state: str | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=BIGINT_MAX)


class IdentityPageOut(Schema):
    items: list[IdentityOut]
    count: int


@router.get("/{mob_id}/identities", response={200: IdentityPageOut, **ERRORS})
def identity_list(request: WorkspaceRequest, mob_id: str, query: Query[IdentityQuery]):
    """Roster with state, continuity and lease. Listing never materializes anyone."""
    qs = selectors.identity_list(mob=_mob(request, mob_id), state=query.state)
    page = list(qs[query.offset : query.offset + query.limit])
    return {"items": selectors.identity_views(page), "count": qs.count()}


@router.post("/{mob_id}/identities", response={201: IdentityOut, **ERRORS})
def identity_create(request: WorkspaceRequest, mob_id: str, payload: IdentityIn):
    identity = services.identity_create(mob=_mob(request, mob_id), spec=payload.dict())
    return Status(201, selectors.identity_views([identity])[0])


def _identity(request: WorkspaceRequest, mob_id: str, key: str):
    return services.identity_get(mob=_mob(request, mob_id), key=key)


@router.get("/{mob_id}/identities/{key}", response={200: IdentityOut, **ERRORS})
def identity_detail(request: WorkspaceRequest, mob_id: str, key: str):
    return selectors.identity_views([_identity(request, mob_id, key)])[0]


@router.delete("/{mob_id}/identities/{key}", response={204: None, **ERRORS})
def identity_delete(request: WorkspaceRequest, mob_id: str, key: str):
    services.identity_delete(identity=_identity(request, mob_id, key))
    return Status(204, None)


@router.post("/{mob_id}/identities/{key}/send", response={202: AcceptanceOut, **ERRORS})
def identity_send(request: WorkspaceRequest, mob_id: str, key: str, payload: SendIn):
    """Accepted at ingress (the turn runs in the background). 409 ``not_addressable`` for
    internal_only identities; same idempotency key + other content: 409 ``idempotency_conflict``."""
    accepted = messaging.identity_send(
        mob=_mob(request, mob_id), key=key, text=payload.text, idempotency_key=payload.idempotency_key
    )
    return Status(202, accepted)


@router.post("/{mob_id}/identities/{key}/dispatch", response={202: AcceptanceOut, **ERRORS})
def identity_dispatch(request: WorkspaceRequest, mob_id: str, key: str, payload: DispatchIn):
    accepted = messaging.identity_dispatch(
        mob=_mob(request, mob_id),
        key=key,
        text=payload.text,
        origin=payload.origin,
        idempotency_key=payload.idempotency_key,
    )
    return Status(202, accepted)


def _view(identity) -> dict[str, Any]:
    identity = services.identity_get(mob=identity.mob, key=identity.key)
    return selectors.identity_views([identity])[0]


@router.post("/{mob_id}/identities/{key}/materialize", response={200: IdentityOut, **ERRORS})
def identity_materialize(request: WorkspaceRequest, mob_id: str, key: str):
    return _view(services.identity_materialize(identity=_identity(request, mob_id, key), retry_broken=True))


@router.post("/{mob_id}/identities/{key}/retire", response={200: dict, **ERRORS})
def identity_retire(request: WorkspaceRequest, mob_id: str, key: str):
    return services.identity_retire(identity=_identity(request, mob_id, key))


@router.post("/{mob_id}/identities/{key}/reset", response={200: IdentityOut, **ERRORS})
def identity_reset(request: WorkspaceRequest, mob_id: str, key: str):
    return _view(services.identity_reset(identity=_identity(request, mob_id, key)))


@router.post("/{mob_id}/identities/{key}/reload", response={200: IdentityOut, **ERRORS})
def identity_reload(request: WorkspaceRequest, mob_id: str, key: str):
    return _view(services.identity_reload(identity=_identity(request, mob_id, key)))


@router.get("/{mob_id}/edges", response={200: list[EdgeOut], **ERRORS})
def edge_list(request: WorkspaceRequest, mob_id: str):
    return list(selectors.edge_list(mob=_mob(request, mob_id)))


@router.post("/{mob_id}/reconcile-edges", response={200: dict, **ERRORS})
def edges_reconcile(request: WorkspaceRequest, mob_id: str):
    return services.edges_reconcile(mob=_mob(request, mob_id))


class ConsoleQuery(Schema):
    after: str | None = Field(None, pattern=CONSOLE_CURSOR, description="``console:<seq>``; omitted: the oldest kept.")
    limit: int = page_limit_field(100, maximum=500)


@router.get("/{mob_id}/console", response={200: ConsolePageOut, **ERRORS})
def console(request: WorkspaceRequest, mob_id: str, query: Query[ConsoleQuery]):
    """Console frames after ``after`` (``console:<seq>``), keyset-paged; ``next_cursor`` never skips."""
    return journal.console_page(mob=_mob(request, mob_id), after=query.after, limit=query.limit)


@router.post("/{mob_id}/console/{cursor}/retry", response={202: FrameOut, **ERRORS})
def console_frame_retry(request: WorkspaceRequest, mob_id: str, cursor: str = Path(..., pattern=CONSOLE_CURSOR)):
    """Retry delivering the frame at ``cursor`` (``console:<seq>``) now. A frame that failed for good
    (``delivery_failed``) gets a fresh set of attempts; one waiting for its retry (``accepted``) goes
    at once. 409 ``delivery_in_progress``, ``not_retriable`` (delivered, completed, not a message),
    ``identity_retired``/``identity_deleted``; 404 ``unknown_frame``; 422 ``invalid_cursor``."""
    frame = delivery.console_frame_get(mob=_mob(request, mob_id), cursor=cursor)
    return Status(202, delivery.console_frame_retry(frame=frame))


class EventsQuery(Schema):
    after_seq: int = cursor_field(description="Return the ledger events after this sequence number.")
    limit: int = page_limit_field()


@router.get("/{mob_id}/events", response={200: MobEventPageOut, **ERRORS})
def mob_events(request: WorkspaceRequest, mob_id: str, query: Query[EventsQuery]):
    """The structural ledger after ``after_seq``. A cursor past the end: 410 ``event_query_stale``."""
    rows, latest = journal.ledger_after(mob=_mob(request, mob_id), after_seq=query.after_seq, limit=query.limit)
    return {"events": rows, "next_after_seq": rows[-1].seq if rows else query.after_seq, "latest_seq": latest}
