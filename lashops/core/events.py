"""The one publish helper, and the event envelope.

Two lanes:

* **durable**: ``publish`` writes an ``Event`` row with the next workspace cursor inside the
  caller's transaction, then sends the envelope to the channel layer after commit;
* **live**: ``publish_live`` sends a cursor-less envelope (``"live": true``) straight to the
  channel layer, after commit when inside a transaction. Committed state supersedes it.

Group names (ASCII, ``<app>.<entity>.<pk>``): every durable event reaches its workspace's
fleet group; events with a session, process or mob subject also reach that stream's group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from lashops.core import live
from lashops.core.models import Event, StreamHead, Workspace


def fleet_group(workspace_id: int) -> str:
    return f"core.workspace.{workspace_id}"


def session_group(session_id: str) -> str:
    return f"sessions.session.{session_id}"


def processes_group(workspace_id: int) -> str:
    return f"processes.workspace.{workspace_id}"


def mob_group(mob_id: str) -> str:
    return f"mobs.mob.{mob_id}"


@dataclass(frozen=True)
class EventDraft:
    type: str
    subject: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def envelope(event: Event, workspace_slug: str) -> dict[str, Any]:
    return {
        "cursor": event.cursor,
        "type": event.type,
        "ts": event.ts.isoformat(),
        "workspace": workspace_slug,
        "subject": event.subject,
        "data": event.data,
    }


def groups_for(workspace_id: int, subject: dict[str, Any], *, durable: bool) -> list[str]:
    groups = [fleet_group(workspace_id)] if durable else []
    if subject.get("session"):
        groups.append(session_group(str(subject["session"])))
    if subject.get("process"):
        groups.append(processes_group(workspace_id))
    if subject.get("mob"):
        groups.append(mob_group(str(subject["mob"])))
    return groups


def _allocate(workspace_id: int, count: int) -> int:
    """Reserve ``count`` cursors and return the last. Must run inside the event's transaction."""
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {StreamHead._meta.db_table} SET last_cursor = last_cursor + %s "
            "WHERE workspace_id = %s RETURNING last_cursor",
            [count, workspace_id],
        )
        row = cur.fetchone()
    if row is None:
        StreamHead.objects.get_or_create(workspace_id=workspace_id)
        return _allocate(workspace_id, count)
    return int(row[0])


def publish_many(*, workspace: Workspace, drafts: Iterable[EventDraft]) -> list[Event]:
    """Write durable events in the current transaction (opening one if there is none) and
    send them live once it commits. Returns the saved rows, cursors assigned in order."""
    drafts = list(drafts)
    if not drafts:
        return []
    with transaction.atomic(savepoint=False):  # no savepoint round trips inside a caller's transaction
        last = _allocate(workspace.pk, len(drafts))
        now = timezone.now()
        events = [
            Event(
                workspace=workspace,
                cursor=last - len(drafts) + i + 1,
                type=draft.type,
                ts=now,
                subject=draft.subject,
                data=draft.data,
                session_id=str(draft.subject.get("session") or ""),
                process_id=str(draft.subject.get("process") or ""),
                mob_id=str(draft.subject.get("mob") or ""),
            )
            for i, draft in enumerate(drafts)
        ]
        Event.objects.bulk_create(events)
        messages = [(groups_for(workspace.pk, e.subject, durable=True), envelope(e, workspace.slug)) for e in events]
        transaction.on_commit(lambda: _send_all(messages))
    return events


def publish(
    *, workspace: Workspace, type: str, subject: dict[str, Any] | None = None, data: dict | None = None
) -> Event:
    """Write one durable event (see ``publish_many``)."""
    return publish_many(workspace=workspace, drafts=[EventDraft(type=type, subject=subject or {}, data=data or {})])[0]


def publish_live(*, workspace: Workspace, type: str, subject: dict[str, Any], data: dict | None = None) -> None:
    """Send a live-lane event (no cursor, not stored). After commit when in a transaction."""
    message = {
        "cursor": None,
        "live": True,
        "type": type,
        "ts": timezone.now().isoformat(),
        "workspace": workspace.slug,
        "subject": subject,
        "data": data or {},
    }
    groups = groups_for(workspace.pk, subject, durable=False)
    transaction.on_commit(lambda: _send_all([(groups, message)]))


LIVE_BATCH = 100  # envelopes per channel-layer message


def _send_all(messages: list[tuple[list[str], dict[str, Any]]]) -> None:
    """One channel-layer send per group (a ``stream.events`` list, in cursor order, when a commit
    published several events for it), not one per event: a group commit of 16 processes is two
    Redis sends, not 32."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for groups, message in messages:
        for group in groups:
            by_group.setdefault(group, []).append(message)
    for group, events in by_group.items():
        if len(events) == 1:
            live.group_send(group, {"type": "stream.event", "event": events[0]})
            continue
        for start in range(0, len(events), LIVE_BATCH):
            live.group_send(group, {"type": "stream.events", "events": events[start : start + LIVE_BATCH]})
