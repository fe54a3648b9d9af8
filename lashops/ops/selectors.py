"""Read-only snapshots behind the /ops/ dashboards and the admin live panels.

Every snapshot reads the stream's committed cursor *first*: the page renders the snapshot, then
subscribes with ``after=<cursor>``, so whatever commits while the snapshot is read arrives on the
stream (and is applied idempotently) instead of falling between the two.

Processes and mobs are read through their apps' models when those apps have them; a page whose
app is not there yet shows that rather than failing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db.models import Count, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from lashops.core.events import envelope
from lashops.core.models import Event, Workspace
from lashops.core.selectors import latest_committed_cursor, leases_held, worker_report

BURN_MINUTES = 60


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


def fleet_counts(*, workspace: Workspace) -> dict[str, Any]:
    from sessions_app.models import Session, Turn

    now = timezone.now()
    Process = model_or_none("processes_app", "Process")
    processes: dict[str, int] = {}
    if Process is not None:
        rows = Process.objects.filter(workspace=workspace).values("status").annotate(n=Count("pk"))
        processes = {r["status"]: r["n"] for r in rows}
    workers = worker_report(now=now)
    health: dict[str, int] = {"healthy": 0, "stale": 0, "stopped": 0}
    for w in workers:
        health[w["health"]] += 1
    return {
        "active_sessions": Session.objects.filter(workspace=workspace, status=Session.Status.OPEN).count(),
        "running_turns": Turn.objects.filter(session__workspace=workspace, status=Turn.Status.RUNNING).count(),
        "turns_last_minute": Turn.objects.filter(
            session__workspace=workspace, created_at__gte=now - timedelta(minutes=1)
        ).count(),
        "processes": processes,
        "leases_held": leases_held(now=now).count(),
        "workers": health,
    }


def fleet_snapshot(*, workspace: Workspace) -> dict[str, Any]:
    """Everything the fleet page draws: counts, turns per minute, workers, token and cost burn."""
    from sessions_app.models import Turn, UsageRecord

    cursor = latest_committed_cursor(workspace=workspace)
    now = timezone.now()
    since = now - timedelta(minutes=BURN_MINUTES)
    turns_per_minute = [
        {"t": row["minute"].isoformat(), "n": row["n"]}
        for row in Turn.objects.filter(session__workspace=workspace, created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("pk"))
        .order_by("minute")
    ]
    usage = list(
        UsageRecord.objects.filter(session__workspace=workspace, created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "session_id", "provider", "model")
        .annotate(tokens=Sum("input_tokens") + Sum("output_tokens"), cost=Sum("cost_usd"))
        .order_by("minute")
    )
    owners = _session_owners(workspace, {row["session_id"] for row in usage})
    burn: dict[str, dict[str, dict[str, list]]] = {"model": {}, "mob": {}, "profile": {}}
    for row in usage:
        mob, profile = owners.get(row["session_id"], ("(no mob)", "(no profile)"))
        keys = {"model": f"{row['provider']}:{row['model']}", "mob": mob, "profile": profile}
        for dimension, key in keys.items():
            series = burn[dimension].setdefault(key, defaultdict(lambda: [0, 0.0]))
            point = series[row["minute"].isoformat()]
            point[0] += int(row["tokens"] or 0)
            point[1] += float(row["cost"] or 0)
    burn_out = {
        dimension: {
            key: [{"t": t, "tokens": v[0], "cost": round(v[1], 6)} for t, v in sorted(series.items())]
            for key, series in by_key.items()
        }
        for dimension, by_key in burn.items()
    }
    return {
        "cursor": cursor,
        "workspace": workspace.slug,
        "counts": fleet_counts(workspace=workspace),
        "turns_per_minute": turns_per_minute,
        "burn": burn_out,
        "workers": worker_report(now=now),
        "events": recent_events(workspace=workspace, limit=30),
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
            }
            for f in reversed(frames)
        ],
        "events": recent_events(workspace=workspace, limit=50, mob_id=str(mob.pk)),
    }
