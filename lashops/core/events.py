"""The one publish helper, and the event envelope.

Two lanes:

* **durable**: ``publish`` writes an ``Event`` row with the next workspace cursor inside the
  caller's transaction, then sends the envelope to the channel layer after commit;
* **live**: ``publish_live`` sends a cursor-less envelope (``"live": true``) straight to the
  channel layer, after commit when inside a transaction. Committed state supersedes it.

Group names (ASCII, ``<app>.<entity>.<pk>``): every durable event reaches its workspace's
fleet group; events with a session, process or mob subject also reach that stream's group.

Cursor order is commit order within a workspace: a cursor is taken by an ``UPDATE`` of the
workspace's ``StreamHead`` row, whose lock is held until the transaction ends, so a later
cursor can never commit before an earlier one (live consumers rely on it). The price is that
writers of one workspace serialise from their first event to their commit; ``deferred()``
moves that point to the end of the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from lashops.core import live, txn
from lashops.core.models import Event, StreamHead, Workspace

if TYPE_CHECKING:
    from django.db.models import Field


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
    """The groups an event goes to, in sending order: its own streams first (a session's text, a
    mob's console: what someone is waiting on), the workspace's fleet stream last."""
    groups = []
    if subject.get("session"):
        groups.append(session_group(str(subject["session"])))
    if subject.get("process"):
        groups.append(processes_group(workspace_id))
    if subject.get("mob"):
        groups.append(mob_group(str(subject["mob"])))
    if durable:
        groups.append(fleet_group(workspace_id))
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


def _unsaved(workspace: Workspace, drafts: list[EventDraft]) -> list[Event]:
    now = timezone.now()
    return [
        Event(
            workspace=workspace,
            type=draft.type,
            ts=now,
            subject=draft.subject,
            data=draft.data,
            session_id=str(draft.subject.get("session") or ""),
            process_id=str(draft.subject.get("process") or ""),
            mob_id=str(draft.subject.get("mob") or ""),
        )
        for draft in drafts
    ]


def _messages(events: list[Event]) -> list[tuple[list[str], dict[str, Any]]]:
    return [(groups_for(e.workspace_id, e.subject, durable=True), envelope(e, e.workspace.slug)) for e in events]


def publish_many(*, workspace: Workspace, drafts: Iterable[EventDraft]) -> list[Event]:
    """Write durable events in the current transaction (opening one if there is none) and
    send them live once it commits. Returns the saved rows, cursors assigned in order.

    Inside ``deferred()`` the rows are only queued: they are written, and their ``cursor``
    and ``pk`` set on the returned objects, when the outermost ``deferred()`` block exits."""
    drafts = list(drafts)
    if not drafts:
        return []
    scope = _deferral.get()
    if scope is not None and txn.in_transaction():
        events = _unsaved(workspace, drafts)
        send = _LiveSend()
        # The send is also the marker that the drafts survived: a savepoint rollback drops
        # the on_commit callbacks registered inside it, and with them these drafts.
        transaction.on_commit(send)
        scope.queued.append((send, events))
        return events
    with transaction.atomic(savepoint=False):  # no savepoint round trips inside a caller's transaction
        events = _unsaved(workspace, drafts)
        _write(events)
        messages = _messages(events)
        transaction.on_commit(lambda: _send_all(messages))
    return events


def _write(events: list[Event]) -> None:
    """Number ``events`` (in order, per workspace, workspaces in pk order so two writers never
    take two stream heads in opposite orders) and insert them."""
    by_workspace: dict[int, list[Event]] = {}
    for event in events:
        by_workspace.setdefault(event.workspace_id, []).append(event)
    for workspace_id in sorted(by_workspace):
        batch = by_workspace[workspace_id]
        if connection.vendor == "postgresql" and len(batch) <= _ONE_STATEMENT_MAX and _insert_numbered(batch):
            continue
        last = _allocate(workspace_id, len(batch))
        for i, event in enumerate(batch):
            event.cursor = last - len(batch) + i + 1
        Event.objects.bulk_create(batch)


_ONE_STATEMENT_MAX = 5000  # 8 parameters an event, under PostgreSQL's 65,535
_EVENT_COLUMNS = ("type", "ts", "subject", "data", "session_id", "process_id", "mob_id")


def _insert_numbered(batch: list[Event]) -> bool:
    """PostgreSQL: take the cursors and insert the rows in one statement, so the stream-head
    lock is held for that statement and the commit, with no client round trip in between.
    False (nothing written) when the workspace has no stream head yet."""
    fields = [cast("Field[Any, Any]", Event._meta.get_field(name)) for name in _EVENT_COLUMNS]
    params: list[Any] = [len(batch), batch[0].workspace_id, batch[0].workspace_id, len(batch)]
    for i, event in enumerate(batch):
        params.append(i + 1)
        params += [f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields]
    row = "(%s::integer, %s, %s::timestamptz, %s::jsonb, %s::jsonb, %s, %s, %s)"
    columns = ", ".join(_EVENT_COLUMNS)
    sql = (
        f"WITH head AS (UPDATE {StreamHead._meta.db_table} SET last_cursor = last_cursor + %s "
        "WHERE workspace_id = %s RETURNING last_cursor) "
        f"INSERT INTO {Event._meta.db_table} (workspace_id, cursor, {columns}) "
        f"SELECT %s, head.last_cursor - %s + v.n, {', '.join(f'v.{c}' for c in _EVENT_COLUMNS)} "
        f"FROM head, (VALUES {', '.join([row] * len(batch))}) AS v(n, {columns}) "
        "RETURNING id, cursor"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        numbered = cur.fetchall()
    if not numbered:
        return False
    first = min(cursor for _pk, cursor in numbered)
    for pk, cursor in numbered:
        batch[cursor - first].pk, batch[cursor - first].cursor = pk, cursor
    return True


class _LiveSend:
    """An on_commit callback that sends what the deferred flush handed it (nothing if the
    flush gave this transaction's envelopes to an earlier one)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self) -> None:
        if self.messages:
            _send_all(self.messages)


@dataclass
class _Deferral:
    depth: int = 0
    queued: list[tuple[_LiveSend, list[Event]]] = field(default_factory=list)


# The open deferred() block of each connection (its outermost one), if any.
_deferral: txn.ConnectionState[_Deferral] = txn.ConnectionState()


@contextmanager
def deferred() -> Iterator[None]:
    """Queue the durable events published inside this block and write them when it exits,
    still inside the caller's transaction: the stream-head lock (which serialises a
    workspace's writers until commit) is then held only from the end of the block to the
    commit, not from the first ``publish`` on. Must be entered inside ``transaction.atomic()``,
    and exit as close to the commit as the code allows::

        with transaction.atomic(), events.deferred():
            ...  # writes and publishes; the events are written last

    Nested blocks join the outermost one. Events of a rolled-back savepoint are dropped with
    it; on an exception nothing is written. Until the block exits, returned events have no
    ``cursor``: a caller that needs it reads it after the block."""
    if not txn.in_transaction():
        raise TransactionManagementError("events.deferred() must be entered inside transaction.atomic()")
    scope = _deferral.setdefault(_Deferral)
    scope.depth += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        scope.depth -= 1
        if scope.depth == 0:
            _deferral.clear()
            if ok and not txn.rollback_pending():
                _flush(scope.queued)


def _flush(queued: list[tuple[_LiveSend, list[Event]]]) -> None:
    sends = set(txn.still_queued(send for send, _events in queued))
    kept = [(send, events) for send, events in queued if send in sends]
    if not kept:
        return
    events = [event for _send, batch in kept for event in batch]
    now = timezone.now()
    for event in events:
        event.ts = now  # the write time: close to the commit, as the cursor is
    with transaction.atomic(savepoint=False):
        _write(events)
    kept[0][0].messages = _messages(events)  # one live send per group for the whole commit


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
