"""Reads for the platform tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from lashops.core import tenancy
from lashops.core.models import ApiKey, Event, Lease, StreamHead, WorkerHeartbeat, Workspace


def api_key_list(*, workspace: Workspace) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(workspace=workspace).order_by("-created_at")


def events_after(
    *,
    workspace: Workspace,
    after: int,
    limit: int,
    through: int | None = None,
    session_id: str = "",
    process_only: bool = False,
    mob_id: str = "",
) -> QuerySet[Event]:
    """Durable events after ``after`` (up to ``through``) in cursor order, optionally narrowed to
    one stream."""
    qs = Event.objects.filter(workspace=workspace, cursor__gt=after)
    if through is not None:
        qs = qs.filter(cursor__lte=through)
    if session_id:
        qs = qs.filter(session_id=session_id)
    if process_only:
        qs = qs.exclude(process_id="")
    if mob_id:
        qs = qs.filter(mob_id=mob_id)
    return qs.order_by("cursor")[:limit]


def stream_bounds(*, workspace: Workspace) -> tuple[int, int]:
    """(pruned_through, last_cursor) of the workspace's stream."""
    head = StreamHead.objects.filter(workspace=workspace).values_list("pruned_through", "last_cursor").first()
    return head if head is not None else (0, 0)


def event_page(*, workspace: Workspace, after: int, limit: int, **stream: Any) -> dict[str, Any]:
    """One page of durable events after ``after`` (optionally one stream: ``session_id``,
    ``process_only``, ``mob_id``): ``{"events", "next_cursor", "latest_cursor", "gap"}``.
    A cursor in pruned history answers ``gap: true`` with the cursor to resume from, never an
    empty page that looks like "nothing new"."""
    from lashops.core.errors import InvalidInput
    from lashops.core.events import envelope

    if after < 0 or not 1 <= limit <= 1000:
        raise InvalidInput("the cursor must be >= 0 and limit between 1 and 1000")
    pruned, latest = stream_bounds(workspace=workspace)
    rows = [] if after < pruned else list(events_after(workspace=workspace, after=after, limit=limit, **stream))
    # The mark is read again after the rows: retention deletes and raises it in one transaction.
    if after < pruned or after < stream_bounds(workspace=workspace)[0]:
        # Continue from what is committed, not from a cursor a transaction still holds open.
        resume = latest_committed_cursor(workspace=workspace)
        return {"events": [], "next_cursor": resume, "latest_cursor": latest, "gap": True}
    return {
        "events": [envelope(e, workspace.slug) for e in rows],
        "next_cursor": rows[-1].cursor if rows else after,
        "latest_cursor": latest,
        "gap": False,
    }


def latest_committed_cursor(*, workspace: Workspace) -> int:
    """The highest cursor a reader can see now. Unlike ``StreamHead.last_cursor`` it never counts
    a cursor allocated by a transaction that has not committed yet, so a client told to continue
    from it cannot skip that event when it commits."""
    top = Event.objects.filter(workspace=workspace).order_by("-cursor").values_list("cursor", flat=True).first()
    if top is not None:
        return int(top)
    pruned, _ = stream_bounds(workspace=workspace)
    return pruned


WORKER_HEALTH = ("healthy", "stale", "dead", "stopped")


def worker_health(row: WorkerHeartbeat, *, now: datetime | None = None) -> str:
    """``stopped`` (shut down cleanly), ``dead`` (its process is gone from its host: marked by the
    sweep, or seen now on this host), ``stale`` (missed beats) or ``healthy``."""
    from lashops.core.heartbeat import worker_gone

    now = now or timezone.now()
    if row.stopped_at is not None:
        return "stopped"
    if row.died_at is not None or worker_gone(host=row.host, pid=row.pid, started_at=row.started_at):
        return "dead"
    if now - row.last_beat_at > timedelta(seconds=settings.LASHOPS_WORKER_STALE_SECONDS):
        return "stale"
    return "healthy"


def worker_list() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.order_by("-last_beat_at")


def leases_held(*, now: datetime | None = None) -> QuerySet[Lease]:
    """Every live lease, of every workspace: for staff views only (see ``workspace_leases_held``)."""
    now = now or timezone.now()
    return Lease.objects.exclude(holder="").filter(expires_at__gte=now)


def _lease_rows(leases: QuerySet[Lease]) -> list[dict[str, Any]]:
    rows = leases.order_by("scope", "key").values("scope", "key", "holder", "expires_at")
    return cast("list[dict[str, Any]]", list(rows))


def workspace_leases_held(*, workspace: Workspace, now: datetime | None = None) -> list[dict[str, Any]]:
    """The live leases whose subject (session, process, identity) belongs to ``workspace``, as
    ``{"scope", "key", "holder", "expires_at"}``; one query per lease scope maps them."""
    held = _lease_rows(leases_held(now=now))
    return [lease for lease, owner in zip(held, tenancy.lease_workspaces(held), strict=True) if owner == workspace.pk]


def worker_report(
    *,
    workspace: Workspace | None,
    now: datetime | None = None,
    held: list[dict[str, Any]] | None = None,
    include_all: bool = False,
) -> list[dict[str, Any]]:
    """The workers with their health and, for a stale or dead one, the leases it still holds:
    that work is at risk until the lease expires and the sweeper reclaims it.

    By default only what needs an operator's eye: healthy workers, and stale or dead ones that
    still hold leases (work at risk). Stopped workers, and stale or dead ones with nothing at risk,
    are listed with ``include_all`` (``?all=1``) only.

    Workers are shared by every workspace, so every workspace sees every worker row; with a
    ``workspace``, a worker's work in flight, its lease count and ``at_risk`` list only that
    workspace's items (``in_flight_count`` counts them). ``workspace=None`` (staff views of
    every workspace) lists everything. ``held``: the workspace's live leases, when the caller
    already has them (``workspace_leases_held``)."""
    now = now or timezone.now()
    rows = list(worker_list())
    if workspace is None:
        held = _lease_rows(leases_held(now=now))
        in_flight = {row.pk: row.in_flight for row in rows}
    else:
        if held is None:
            held = workspace_leases_held(workspace=workspace, now=now)
        items = [item for row in rows for item in row.in_flight]
        owners = iter(tenancy.work_workspaces(items))  # one batch for every worker
        in_flight = {row.pk: [item for item in row.in_flight if next(owners) == workspace.pk] for row in rows}
    report = []
    for row in rows:
        health = worker_health(row, now=now)
        mine = [lease for lease in held if lease["holder"].startswith(row.holder_prefix)]
        at_risk = health in ("stale", "dead") and bool(mine)
        if not include_all and health != "healthy" and not at_risk:
            continue
        report.append(
            {
                "worker_id": row.worker_id,
                "kind": row.kind,
                "host": row.host,
                "pid": row.pid,
                "queues": row.queues,
                "started_at": row.started_at.isoformat(),
                "last_beat_at": row.last_beat_at.isoformat(),
                "seconds_since_beat": round((now - row.last_beat_at).total_seconds(), 1),
                "health": health,
                "stale_reported_at": row.stale_reported_at.isoformat() if row.stale_reported_at else None,
                "stopped_at": row.stopped_at.isoformat() if row.stopped_at else None,
                "died_at": row.died_at.isoformat() if row.died_at else None,
                "in_flight_count": row.in_flight_count if workspace is None else len(in_flight[row.pk]),
                "in_flight": in_flight[row.pk],
                "completed": row.completed,
                "leases_held": len(mine),
                "at_risk": [
                    {"scope": lease["scope"], "key": lease["key"], "expires_at": lease["expires_at"].isoformat()}
                    for lease in mine
                ]
                if at_risk
                else [],
            }
        )
    return report
