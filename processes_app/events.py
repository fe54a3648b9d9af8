"""Appending to a process's event log, always together with the durable event lane.

Callers hold the process row (``select_for_update``) inside their transaction, so the
per-process ``seq`` is allocated without races; the durable events (``publish_many``) come
last in the transaction so the stream-head lock is held as briefly as possible and cursor
order stays commit order.
"""

from __future__ import annotations

from typing import Any

from lashops.core.events import EventDraft, publish_many
from processes_app.models import Process, ProcessEvent


def durable_type(log_type: str) -> str:
    """``signal.approve`` -> ``process.signal.approve``; ``process.started`` stays as is."""
    return log_type if log_type.startswith("process.") else f"process.{log_type}"


def append(process: Process, entries: list[tuple[str, dict[str, Any]]]) -> list[ProcessEvent]:
    """Append ``(type, data)`` entries to the log of a locked ``process`` and publish them.
    Saves ``process.event_seq``; the caller saves any other field it changed."""
    rows = []
    drafts = []
    for type_, data in entries:
        process.event_seq += 1
        rows.append(ProcessEvent(process=process, seq=process.event_seq, type=type_, data=data))
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
    ProcessEvent.objects.bulk_create(rows)
    Process.objects.filter(pk=process.pk).update(event_seq=process.event_seq)
    publish_many(workspace=process.workspace, drafts=drafts)
    return rows
