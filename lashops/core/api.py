"""Platform endpoints: the caller's workspace, its API keys, and its durable event stream."""

from __future__ import annotations

from django.db import transaction
from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate

from lashops.core import event_types, schemas, selectors, services
from lashops.core.auth import WorkspaceRequest
from lashops.core.errors import NotFound
from lashops.core.events import publish
from lashops.core.models import ApiKey
from lashops.core.pagination import BoundedLimitOffsetPagination
from lashops.core.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ErrorOut,
    EventPageOut,
    WorkspaceOut,
    cursor_field,
    page_limit_field,
)
from lashops.core.validation import BIGINT_MAX

router = Router(tags=["platform"])


@router.get("/workspace", response=WorkspaceOut)
def workspace_detail(request: WorkspaceRequest):
    return request.workspace


@router.get("/keys", response=list[ApiKeyOut])
@paginate(BoundedLimitOffsetPagination)
def api_key_list(request: WorkspaceRequest):
    return selectors.api_key_list(workspace=request.workspace)


def _key_or_404(request: WorkspaceRequest, key_id: int) -> ApiKey:
    api_key = selectors.api_key_list(workspace=request.workspace).filter(pk=key_id).first()
    if api_key is None:
        raise NotFound(f"no API key {key_id} in this workspace")
    return api_key


@router.post("/keys", response={201: ApiKeyCreatedOut, 422: ErrorOut})
def api_key_create(request: WorkspaceRequest, payload: ApiKeyIn):
    with transaction.atomic():
        issued = services.api_key_create(workspace=request.workspace, name=payload.name)
        publish(
            workspace=request.workspace,
            type=event_types.API_KEY_CREATED,
            subject={"api_key": issued.api_key.pk},
            data={"name": issued.api_key.name, "prefix": issued.api_key.prefix},
        )
    out = ApiKeyOut.from_orm(issued.api_key).dict() | {"key": issued.plaintext}
    return Status(201, out)


@router.get("/keys/{key_id}", response={200: ApiKeyOut, 404: ErrorOut})
def api_key_detail(request: WorkspaceRequest, key_id: int = Path(..., ge=1, le=BIGINT_MAX)):
    return _key_or_404(request, key_id)


@router.delete("/keys/{key_id}", response={200: ApiKeyOut, 404: ErrorOut})
def api_key_revoke(request: WorkspaceRequest, key_id: int = Path(..., ge=1, le=BIGINT_MAX)):
    api_key = _key_or_404(request, key_id)
    with transaction.atomic():
        services.api_key_revoke(api_key=api_key)
        publish(
            workspace=request.workspace,
            type=event_types.API_KEY_REVOKED,
            subject={"api_key": api_key.pk},
            data={"name": api_key.name, "prefix": api_key.prefix},
        )
    return api_key


class EventsQuery(Schema):
    after: int = cursor_field()
    limit: int = page_limit_field()


@router.get("/events", response={200: EventPageOut, 422: ErrorOut})
def event_list(request: WorkspaceRequest, query: Query[EventsQuery]):
    """The workspace's durable events after a cursor (the fleet stream, over HTTP)."""
    return selectors.event_page(workspace=request.workspace, after=query.after, limit=query.limit)


class ProbeOut(Schema):
    probe_id: str
    runner: str


@router.post("/runner/probe", response={202: ProbeOut})
def runner_probe(request: WorkspaceRequest):
    """Dispatch a no-op task through the runner (a Celery worker in production). When it has run,
    a ``runner.probe_completed`` event with the worker's host and pid appears on the fleet stream."""
    import uuid

    from lashops.core.runner import dispatch, runner_mode
    from lashops.core.tasks import runner_probe_task

    probe_id = uuid.uuid4().hex
    with transaction.atomic():
        publish(workspace=request.workspace, type=event_types.RUNNER_PROBE_REQUESTED, subject={"probe": probe_id})
        dispatch(runner_probe_task, workspace_id=request.workspace.pk, probe_id=probe_id)
    return Status(202, {"probe_id": probe_id, "runner": runner_mode()})


@router.get("/workers", response=list[dict])
def worker_list(
    request: WorkspaceRequest, all: bool = Query(False, description="Also list stopped, dead and stale workers.")
):
    """Runner processes (Celery pool processes, in-process drivers) with their last heartbeat,
    health (``healthy``/``stale``/``dead``/``stopped``), this workspace's work in flight on each,
    and for a stale or dead one the leases of this workspace it still holds (``at_risk``) until
    they expire and the sweeper reclaims the work. By default only healthy workers and those with
    work at risk are listed; ``?all=1`` lists every known one. Workers are shared by every
    workspace; their work is not."""
    return selectors.worker_report(workspace=request.workspace, include_all=all)


@router.post("/ws-tickets", response={201: schemas.WsTicketOut, 401: ErrorOut})
def ws_ticket_create(request: WorkspaceRequest):
    """A short-lived, single-use ticket for one WebSocket handshake: open any ``/ws/`` path with
    ``?ticket=<ticket>`` before it expires. For browsers and clients that cannot set headers, so
    that no API key travels in a URL (URLs end up in access logs). Bound to this workspace and to
    the key or user that asked; a second use, an expired ticket or a revoked key is refused."""
    api_key = getattr(request, "api_key", None)
    user = request.user if api_key is None and request.user.is_authenticated else None
    issued = services.ws_ticket_issue(workspace=request.workspace, api_key=api_key, user=user)
    return Status(
        201,
        {
            "ticket": issued.plaintext,
            "expires_at": issued.ticket.expires_at,
            "expires_in": issued.expires_in,
            "workspace": request.workspace.slug,
        },
    )
