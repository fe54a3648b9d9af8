"""Reads for the platform tables."""

from __future__ import annotations

from django.db.models import QuerySet

from lashops.core.models import ApiKey, Event, StreamHead, Workspace


def api_key_list(*, workspace: Workspace) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(workspace=workspace).order_by("-created_at")


def events_after(
    *, workspace: Workspace, after: int, limit: int, session_id: str = "", process_only: bool = False, mob_id: str = ""
) -> QuerySet[Event]:
    """Durable events after ``after`` in cursor order, optionally narrowed to one stream."""
    qs = Event.objects.filter(workspace=workspace, cursor__gt=after)
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
