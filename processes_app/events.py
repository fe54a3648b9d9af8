"""Appending to a process's event log, together with the durable event lane.

Callers hold the process row (``select_for_update``) inside their transaction, so the
per-process ``seq`` is allocated without races; the durable events (``publish_many``) come
last in the transaction so the stream-head lock is held as briefly as possible and cursor
order stays commit order.

Every entry lands in the process log. State transitions and what others react to
(created, started, resumed, waiting, signals, emitted events, children, the terminal
event) also go to the workspace stream; ``LOG_ONLY`` entries (a step's completion) stay in
the process log, so a many-step process does not take the workspace's stream-head lock
for each step.
"""

from __future__ import annotations

from typing import Any

from lashops.core import event_types
from lashops.core.events import EventDraft, publish_many
from processes_app.models import Process, ProcessEvent

LOG_ONLY = frozenset({event_types.PROCESS_STEP_COMPLETED})

Entry = tuple[str, dict[str, Any]]


def durable_type(log_type: str) -> str:
    """``signal.approve`` -> ``process.signal.approve``; ``process.started`` stays as is."""
    return log_type if log_type.startswith("process.") else f"process.{log_type}"


def prepare(process: Process, entries: list[Entry]) -> tuple[list[ProcessEvent], list[EventDraft]]:
    """Number ``entries`` for a locked ``process`` (advancing ``process.event_seq`` in memory)
    and build its log rows and stream drafts; nothing is written yet."""
    rows: list[ProcessEvent] = []
    drafts: list[EventDraft] = []
    for type_, data in entries:
        process.event_seq += 1
        rows.append(ProcessEvent(process=process, seq=process.event_seq, type=type_, data=data))
        if type_ in LOG_ONLY:
            continue
        drafts.append(
            EventDraft(
                type=durable_type(type_),
                subject={"process": process.id},
                data={
                    "seq": process.event_seq,
                    "status": process.status,
                    "definition": process.definition_name,
                    **data,
                },
            )
        )
    return rows, drafts


def write(process: Process, rows: list[ProcessEvent], drafts: list[EventDraft]) -> None:
    """Insert prepared rows and publish the drafts (the caller has saved ``event_seq``)."""
    ProcessEvent.objects.bulk_create(rows)
    publish_many(workspace=process.workspace, drafts=drafts)


def append(process: Process, entries: list[Entry]) -> list[ProcessEvent]:
    """Append ``(type, data)`` entries to the log of a locked ``process`` and publish them.
    Saves ``process.event_seq``; the caller saves any other field it changed."""
    rows, drafts = prepare(process, entries)
    Process.objects.filter(pk=process.pk).update(event_seq=process.event_seq)
    write(process, rows, drafts)
    return rows
