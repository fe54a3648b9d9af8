"""Reads for sessions. Every lookup is scoped to a workspace: another workspace's ids are 404."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet, Sum

from lashops.core.models import Effect, Workspace
from sessions_app.errors import SessionNotFound, TurnNotFound
from sessions_app.models import Node, PendingInput, Session, Turn, UsageRecord


def session_list(*, workspace: Workspace) -> QuerySet[Session]:
    return Session.objects.filter(workspace=workspace).order_by("-created_at")


def session_get(*, workspace: Workspace, session_id: str) -> Session:
    session = Session.objects.select_related("workspace").filter(workspace=workspace, pk=session_id).first()
    if session is None:
        raise SessionNotFound(f"no session {session_id!r} in this workspace")
    return session


def turn_list(*, session: Session) -> QuerySet[Turn]:
    return Turn.objects.filter(session=session).order_by("-index")


def turn_get(*, session: Session, turn_id: str) -> Turn:
    turn = Turn.objects.select_related("session", "session__workspace").filter(session=session, pk=turn_id).first()
    if turn is None:
        raise TurnNotFound(f"no turn {turn_id!r} in session {session.pk!r}")
    return turn


def transcript(*, session: Session) -> list[Node]:
    """The settled transcript: the committed path from the root to the session's leaf."""
    if not session.leaf_node_id:
        return []
    rows = {
        n.node_id: n
        for n in Node.objects.filter(session=session).only(
            "node_id", "turn_id", "seq", "kind", "parent_id", "caused_by", "payload"
        )
    }
    path, cursor = [], session.leaf_node_id
    while cursor and cursor in rows:
        path.append(rows[cursor])
        cursor = rows[cursor].parent_id
    path.reverse()
    return path


def pending_inputs(*, session: Session) -> QuerySet[PendingInput]:
    return PendingInput.objects.filter(session=session).order_by("id")


def turn_effects(*, turn: Turn) -> QuerySet[Effect]:
    return Effect.objects.filter(scope=turn.scope).order_by("id")


_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
    "cost_usd",
)


def _usd(value: Decimal | None) -> str:
    # SQLite's SUM comes back with 18 places, PostgreSQL's with the column's 6: answer alike.
    return str((value or Decimal(0)).quantize(Decimal("0.000001")))


def usage_report(*, session: Session) -> dict[str, Any]:
    """Own usage, child usage (subagents) and a breakdown by source and model."""
    rows = (
        UsageRecord.objects.filter(session=session)
        .values("source", "provider", "model")
        .annotate(calls=Count("id"), **{f: Sum(f) for f in _FIELDS})
        .order_by("source", "provider", "model")
    )
    by_model = [{k: (_usd(v) if k == "cost_usd" else v) for k, v in row.items()} for row in rows]
    own = {f: getattr(session, f) for f in _FIELDS}
    child = {f: sum(r[f] or 0 for r in rows if r["source"] == "child") for f in _FIELDS if f != "cost_usd"}
    total = {f: (own[f] or 0) + child.get(f, 0) for f in _FIELDS if f != "cost_usd"}
    return {
        "session_id": session.pk,
        "usage": {k: (str(v) if k == "cost_usd" else v) for k, v in own.items()},
        "child_usage": child,
        "total_usage": total,
        "cost_usd": str(session.cost_usd),
        "by_source_and_model": by_model,
    }


# --- workspace of shared runner state (registered with lashops.core.tenancy) ---------------


def session_workspaces(session_ids: set[str]) -> dict[str, int]:
    """``{session id: workspace id}``: the ``session`` lease scope and ``session_id`` task ids."""
    return dict(Session.objects.filter(pk__in=session_ids).values_list("pk", "workspace_id"))


def turn_workspaces(turn_ids: set[str]) -> dict[str, int]:
    """``{turn id: workspace id}`` for ``turn_id`` task ids."""
    return dict(Turn.objects.filter(pk__in=turn_ids).values_list("pk", "session__workspace_id"))
