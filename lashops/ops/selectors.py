"""Read-only snapshots behind the /ops/ dashboards and the admin live panels.

Every snapshot reads the stream's committed cursor *first*: the page renders the snapshot, then
subscribes with ``after=<cursor>``, so whatever commits while the snapshot is read arrives on the
stream (and is applied idempotently) instead of falling between the two.

Processes and mobs are read through their apps' models when those apps have them; a page whose
app is not there yet shows that rather than failing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db.models import Count, F, Sum, Value
from django.db.models.functions import ExtractMinute, Floor, TruncHour, TruncMinute
from django.utils import timezone

from lashops.core.errors import InvalidInput
from lashops.core.events import envelope
from lashops.core.models import Event, Workspace
from lashops.core.selectors import (
    WORKER_HEALTH,
    latest_committed_cursor,
    worker_health,
    worker_list,
    worker_report,
    workspace_leases_held,
)

TURNS_PER_MINUTE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class BurnRange:
    """A window of the burn charts and the width of one point on them."""

    name: str
    span: timedelta
    bucket: timedelta


# A few dozen to a couple of hundred points per series, whatever the window.
BURN_RANGES = {
    r.name: r
    for r in (
        BurnRange("1h", timedelta(hours=1), timedelta(minutes=1)),
        BurnRange("24h", timedelta(hours=24), timedelta(minutes=15)),
        BurnRange("7d", timedelta(days=7), timedelta(hours=1)),
    )
}
DEFAULT_BURN_RANGE = "1h"


def burn_range(value: str | None) -> BurnRange:
    """The burn window named by ``?range=`` (``1h`` when absent); ``InvalidInput`` otherwise."""
    if value is None or value == "":
        return BURN_RANGES[DEFAULT_BURN_RANGE]
    try:
        return BURN_RANGES[value]
    except KeyError:
        allowed = list(BURN_RANGES)
        raise InvalidInput(
            f"range must be one of {', '.join(allowed)} (got {value[:20]!r})",
            code="invalid_range",
            details=[{"path": "range", "message": f"expected one of {allowed}", "type": "enum"}],
        ) from None


def burn_window(window: BurnRange, *, now: datetime) -> tuple[datetime, datetime]:
    """(first bucket's start, now): whole buckets, the current (partial) one last, so a point
    never moves to another bucket between two reads."""
    seconds = int(window.bucket.total_seconds())
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    current = epoch + timedelta(seconds=int((now - epoch).total_seconds()) // seconds * seconds)
    return current - (window.span - window.bucket), now


def _bucket_of(window: BurnRange) -> dict[str, Any]:
    """Annotations that put a row in its bucket, computed by the database (SQLite and PostgreSQL)."""
    minutes = int(window.bucket.total_seconds()) // 60
    if minutes == 1:
        return {"bucket": TruncMinute("created_at")}
    if minutes == 60:
        return {"bucket": TruncHour("created_at")}
    if 60 % minutes:
        raise ValueError(f"a sub-hour bucket must divide the hour, not {minutes} minutes")
    return {"bucket": TruncHour("created_at"), "slot": Floor(ExtractMinute("created_at") / Value(minutes))}


def _bucket_start(row: dict[str, Any], window: BurnRange) -> datetime:
    return row["bucket"] + int(row.get("slot") or 0) * window.bucket


def model_or_none(app_label: str, name: str) -> Any:
    try:
        return apps.get_model(app_label, name)
    except LookupError:
        return None


def recent_events(*, workspace: Workspace, limit: int = 30, **filters: Any) -> list[dict[str, Any]]:
    rows = Event.objects.filter(workspace=workspace, **filters).order_by("-cursor")[:limit]
    return [envelope(e, workspace.slug) for e in reversed(list(rows))]


def _session_owners(workspace: Workspace, session_ids: set[str]) -> dict[str, tuple[str, str]]:
    """session id -> (mob, profile) for sessions that belong to a mob member."""
    Continuity = model_or_none("mobs_app", "Continuity")
    if Continuity is None or not session_ids:
        return {}
    rows = Continuity.objects.filter(session_id__in=session_ids).values_list(
        "session_id", "identity__mob_id", "identity__profile"
    )
    return {sid: (str(mob), profile) for sid, mob, profile in rows}


def fleet_counts(
    *, workspace: Workspace, now: datetime | None = None, held: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``held``: the workspace's live leases, when the caller already has them."""
    from sessions_app.models import Session, Turn

    now = now or timezone.now()
    if held is None:
        held = workspace_leases_held(workspace=workspace, now=now)
    Process = model_or_none("processes_app", "Process")
    processes: dict[str, int] = {}
    if Process is not None:
        rows = Process.objects.filter(workspace=workspace).values("status").annotate(n=Count("pk"))
        processes = {r["status"]: r["n"] for r in rows}
    health: dict[str, int] = dict.fromkeys(WORKER_HEALTH, 0)
    for row in worker_list():  # worker rows are shared; only their work is per workspace
        health[worker_health(row, now=now)] += 1
    return {
        "active_sessions": Session.objects.filter(workspace=workspace, status=Session.Status.OPEN).count(),
        "running_turns": Turn.objects.filter(session__workspace=workspace, status=Turn.Status.RUNNING).count(),
        "turns_last_minute": Turn.objects.filter(
            session__workspace=workspace, created_at__gte=now - timedelta(minutes=1)
        ).count(),
        "processes": processes,
        "leases_held": len(held),
        "workers": health,
    }


def fleet_snapshot(*, workspace: Workspace, range_name: str | None = None, all_workers: bool = False) -> dict[str, Any]:
    """Everything the fleet page draws: counts, turns per minute, workers, and token and cost
    burn over ``range_name`` (``1h`` by the minute, ``24h`` by 15 minutes, ``7d`` by the hour).
    Raises ``InvalidInput`` for any other range. The workers are those ``worker_report`` shows by
    default (healthy, or with work at risk); ``all_workers`` adds the stopped, dead and stale."""
    from sessions_app.models import Turn

    window = burn_range(range_name)
    cursor = latest_committed_cursor(workspace=workspace)
    now = timezone.now()
    turns_per_minute = [
        {"t": row["minute"].isoformat(), "n": row["n"]}
        for row in Turn.objects.filter(session__workspace=workspace, created_at__gte=now - TURNS_PER_MINUTE_WINDOW)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("pk"))
        .order_by("minute")
    ]
    since, until = burn_window(window, now=now)
    held = workspace_leases_held(workspace=workspace, now=now)  # once for the counts and the workers
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "counts": fleet_counts(workspace=workspace, now=now, held=held),
        "turns_per_minute": turns_per_minute,
        "burn": burn_series(workspace=workspace, window=window, since=since),
        "burn_range": {
            "range": window.name,
            "bucket_seconds": int(window.bucket.total_seconds()),
            "since": since.isoformat(),
            "until": until.isoformat(),
            "choices": list(BURN_RANGES),
        },
        "workers": worker_report(workspace=workspace, now=now, held=held, include_all=all_workers),
        "all_workers": all_workers,
        "events": recent_events(workspace=workspace, limit=30),
    }


def burn_series(*, workspace: Workspace, window: BurnRange, since: datetime) -> dict[str, dict[str, list]]:
    """Tokens and cost per bucket since ``since``, by model, by mob and by profile:
    ``{dimension: {key: [{"t", "tokens", "cost"}]}}`` with ``t`` the bucket's start."""
    from sessions_app.models import UsageRecord

    bucket = _bucket_of(window)
    usage = list(
        UsageRecord.objects.filter(session__workspace=workspace, created_at__gte=since)
        .annotate(**bucket)
        .values(*bucket, "session_id", "provider", "model")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")), cost=Sum("cost_usd"))
    )
    owners = _session_owners(workspace, {row["session_id"] for row in usage})
    burn: dict[str, dict[str, dict[str, list]]] = {"model": {}, "mob": {}, "profile": {}}
    for row in usage:
        t = _bucket_start(row, window).isoformat()
        mob, profile = owners.get(row["session_id"], ("(no mob)", "(no profile)"))
        keys = {"model": f"{row['provider']}:{row['model']}", "mob": mob, "profile": profile}
        for dimension, key in keys.items():
            point = burn[dimension].setdefault(key, defaultdict(lambda: [0, 0.0]))[t]
            point[0] += int(row["tokens"] or 0)
            point[1] += float(row["cost"] or 0)
    return {
        dimension: {
            key: [{"t": t, "tokens": v[0], "cost": round(v[1], 6)} for t, v in sorted(series.items())]
            for key, series in by_key.items()
        }
        for dimension, by_key in burn.items()
    }


def session_snapshot(*, workspace: Workspace, session_id: str) -> dict[str, Any] | None:
    from sessions_app.models import Session

    cursor = latest_committed_cursor(workspace=workspace)
    session = Session.objects.filter(workspace=workspace, pk=session_id).first()
    if session is None:
        return None
    turns = list(session.turns.order_by("-index")[:20])
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "session": {
            "id": session.pk,
            "status": session.status,
            "model": session.model,
            "active_turn_id": session.active_turn_id,
            "input_tokens": session.input_tokens,
            "output_tokens": session.output_tokens,
            "cost_usd": str(session.cost_usd),
        },
        "turns": [
            {
                "id": t.pk,
                "index": t.index,
                "status": t.status,
                "outcome": t.outcome,
                "stop_reason": t.stop_reason,
                "input_text": t.input_text[:2000],
                "final_text": t.final_text[:20000],
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cost_usd": str(t.cost_usd),
            }
            for t in reversed(turns)
        ],
        "events": recent_events(workspace=workspace, limit=50, session_id=session.pk),
    }


def _process_row(p: Any) -> dict[str, Any]:
    return {
        "id": p.pk,
        "kind": p.kind,
        "definition": p.definition_name,
        "status": p.status,
        "wait_kind": p.wait_kind,
        "wait_signal": p.wait_signal,
        "run_count": p.run_count,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
        "error": p.error,
        "output": p.output,
    }


def processes_snapshot(*, workspace: Workspace, status: str = "", definition: str = "") -> dict[str, Any] | None:
    Process = model_or_none("processes_app", "Process")
    if Process is None:
        return None
    cursor = latest_committed_cursor(workspace=workspace)
    qs = Process.objects.filter(workspace=workspace)
    if status:
        qs = qs.filter(status=status)
    if definition:
        qs = qs.filter(definition_name=definition)
    statuses = [value for value, _ in Process._meta.get_field("status").choices]
    definitions = sorted(
        Process.objects.filter(workspace=workspace).values_list("definition_name", flat=True).distinct()
    )
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "filters": {"status": status, "definition": definition},
        "statuses": statuses,
        "definitions": [d for d in definitions if d],
        "processes": [_process_row(p) for p in qs.order_by("-created_at")[:200]],
    }


def process_snapshot(*, workspace: Workspace, process_id: str) -> dict[str, Any] | None:
    Process = model_or_none("processes_app", "Process")
    if Process is None:
        return None
    cursor = latest_committed_cursor(workspace=workspace)
    process = Process.objects.filter(workspace=workspace, pk=process_id).first()
    if process is None:
        return None
    log = [
        {"seq": e.seq, "type": e.type, "data": e.data, "ts": e.ts.isoformat()}
        for e in process.events.order_by("-seq")[:200]
    ]
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "process": _process_row(process) | {"input": process.input},
        "log": list(reversed(log)),
    }


def mob_snapshot(*, workspace: Workspace, mob_id: str) -> dict[str, Any] | None:
    Mob = model_or_none("mobs_app", "Mob")
    if Mob is None:
        return None
    cursor = latest_committed_cursor(workspace=workspace)
    mob = Mob.objects.filter(workspace=workspace, mob_id=mob_id).first()
    if mob is None and mob_id.isdigit():
        mob = Mob.objects.filter(workspace=workspace, pk=int(mob_id)).first()
    if mob is None:
        return None
    identities = list(mob.identities.order_by("key"))
    edges = [{"a": e.a, "b": e.b} for e in mob.edges.all()] if hasattr(mob, "edges") else []
    frames = list(mob.console_frames.order_by("-seq")[:100])
    # The current limit: a frame's own retry events carry the limit it was retried under.
    max_attempts = settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS
    states: dict[str, int] = defaultdict(int)
    for i in identities:
        states[i.state] += 1
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "mob": {
            "pk": mob.pk,
            "id": mob.mob_id,
            "bootstrap_mode": mob.bootstrap_mode,
            "bootstrap_error": mob.bootstrap_error,
            "session_count": mob.session_count,
            "max_sessions": mob.max_sessions,
        },
        "identities": [
            {
                "key": i.key,
                "profile": i.profile,
                "state": i.state,
                "labels": i.labels,
                "addressability": i.addressability,
                "broken_reason": i.broken_reason,
            }
            for i in identities
        ],
        "edges": edges,
        "states": dict(states),
        "console": [
            {
                "seq": f.seq,
                "identity": f.identity,
                "kind": f.kind,
                "status": f.status,
                "payload": f.payload,
                "ts": f.created_at.isoformat(),
                "frame_version": f.frame_version,
                "delivery_attempts": f.delivery_attempts,
                "max_attempts": max_attempts,
                "next_attempt_at": f.next_attempt_at.isoformat() if f.next_attempt_at else None,
                "last_error": f.last_error,
            }
            for f in reversed(frames)
        ],
        "delivery": {"max_attempts": max_attempts},
        "events": recent_events(workspace=workspace, limit=50, mob_id=str(mob.pk)),
    }
