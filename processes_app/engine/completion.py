"""Completion: the terminal write of a run (fenced by its lease token), the group commit of a
claimed batch's completions (``Completions``), and ``terminate`` for callers that hold the row
lock themselves (cancel, sweep, external completion)."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import LeaseLost
from lashops.core.events import EventDraft, publish_many
from lashops.core.models import Workspace
from lashops.core.services import lease_check, lease_release
from processes_app import events as process_events
from processes_app.engine.claims import Claim, _db_retry, _keeper, lock_process
from processes_app.engine.dispatch import dispatch_drive
from processes_app.errors import DatabaseUnavailable
from processes_app.models import Process, ProcessEvent, ProcessStatus, WaitKind
from processes_app.selectors import LEASE_SCOPE

if TYPE_CHECKING:
    from processes_app.engine.run import ProcessRun

log = logging.getLogger(__name__)


class Completions:
    """Completions of one claimed batch, committed together (group commit).

    A run that ends ``completed`` or ``failed`` is queued here with its held-back step record
    and keeps its lease (the keeper renews it) until the group is written: one transaction
    that locks the rows, checks every token, records the steps, writes the terminal states
    and releases the leases, with one stream publish. The group is written once it holds a
    claim batch or its oldest entry is ``LASHOPS_PROCESS_GROUP_COMMIT_SECONDS`` old (checked
    between runs), and always when the batch ends. A crash before then re-runs each queued
    process's last step (at-least-once, as a crash between a step and its record always did).
    """

    def __init__(self) -> None:
        self.runs: list[tuple[ProcessRun, str, Any, dict | None]] = []
        self.since = 0.0

    def add(self, run: ProcessRun, status: str, *, output: Any = None, error: dict | None = None) -> str:
        if not self.runs:
            self.since = time.monotonic()
        self.runs.append((run, status, output, error))
        return status

    def due(self) -> bool:
        if not self.runs:
            return False
        age = time.monotonic() - self.since
        return len(self.runs) >= int(settings.LASHOPS_PROCESS_CLAIM_BATCH) or age >= float(
            settings.LASHOPS_PROCESS_GROUP_COMMIT_SECONDS
        )

    def flush(self) -> bool:
        """Write the group; False when the database could not be reached (see ``_db_retry``:
        held-back step records are retried while every run's lease is still ours)."""
        runs, self.runs = self.runs, []
        if not runs:
            return True
        ttl = float(settings.LASHOPS_PROCESS_LEASE_SECONDS)
        until = min(run.claim.renewed_at for run, *_ in runs) + ttl
        try:
            try:
                _db_retry(lambda: _finish_group(runs), until=until)
            except DatabaseUnavailable as exc:
                log.warning("completing %d processes failed: database unreachable (%s)", len(runs), exc)
                return False
            except Exception:
                # One bad entry must not sink the others: write them one by one.
                log.warning("group completion of %d processes failed; completing them one by one", len(runs))
                for run, status, output, error in runs:
                    try:
                        run.finish(status, output=output, error=error)
                    except DatabaseUnavailable:
                        log.warning("completing process %s failed: database unreachable", run.claim.process_id)
                        return False
                    except Exception:
                        log.exception("completing process %s failed", run.claim.process_id)
        finally:
            for run, *_ in runs:
                _keeper.remove(run.claim)
        return True


def _finish_group(runs: list[tuple[ProcessRun, str, Any, dict | None]]) -> None:
    """``_finish`` for many runs in one transaction (see ``Completions``)."""
    from lashops.core.models import Effect

    if len(runs) == 1:
        run, status, output, error = runs[0]
        run.finish(status, output=output, error=error)
        return
    by_id = {run.claim.process_id: (run, status, output, error) for run, status, output, error in runs}
    ids = sorted(by_id)
    now = timezone.now()
    with transaction.atomic():
        procs = list(
            Process.objects.select_for_update(of=("self",))
            .select_related("workspace")
            .filter(pk__in=ids)
            .order_by("pk")
        )
        # Check every token and release the live ones in one statement: a lease we no longer
        # hold is not released, and its run writes nothing (the rollback of a failed group
        # restores the released ones).
        live = _release_live([(p.pk, by_id[p.pk][0].claim.token) for p in procs], now)
        effects: list[Effect] = []
        rows: list[ProcessEvent] = []
        drafts: dict[int, tuple[Workspace, list[EventDraft]]] = {}
        recorded: list[ProcessRun] = []
        ended: list[Process] = []
        for proc in procs:
            run, status, output, error = by_id[proc.pk]
            if proc.is_terminal:
                continue
            if proc.pk not in live:
                run.claim.lost = True
                continue
            log_entries: list[process_events.Entry] = []
            if run.pending is not None:
                key, kind, outcome, log_entries = run.pending
                recorded.append(run)
                effects.append(
                    Effect(
                        workspace_id=proc.workspace_id,
                        scope=f"process:{proc.pk}",
                        replay_key=key,
                        kind=kind,
                        outcome=outcome,
                    )
                )
            new_rows, new_drafts = _set_terminal(proc, status, output=output, error=error, log=log_entries, now=now)
            ended.append(proc)
            rows += new_rows
            drafts.setdefault(proc.workspace_id, (proc.workspace, []))[1].extend(new_drafts)
        _save_terminals(ended, now)
        for proc in ended:
            _wake_parent(proc, now)
        Effect.objects.bulk_create(effects)
        ProcessEvent.objects.bulk_create(rows)
        for workspace, workspace_drafts in drafts.values():
            publish_many(workspace=workspace, drafts=workspace_drafts)  # last: the stream-head lock
    for run in recorded:
        run.pending = None  # only once committed: a failed group falls back to one by one


def _release_live(held: list[tuple[str, int]], now: Any) -> set[str]:
    """Release the leases among ``(key, token)`` that are still current and unexpired; return
    their keys. On PostgreSQL one ``UPDATE ... RETURNING`` (the rows stay locked until commit)."""
    from django.db.models import Q

    from lashops.core.models import Lease

    if not held:
        return set()
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Lease._meta.db_table)
        pairs = ", ".join(["(%s, %s::bigint)"] * len(held))
        sql = (
            f"UPDATE {table} SET holder = '', expires_at = %s "
            f"WHERE scope = %s AND holder <> '' AND expires_at >= %s AND (key, token) IN (VALUES {pairs}) "
            "RETURNING key"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, LEASE_SCOPE, now, *(v for pair in held for v in pair)])
            return {row[0] for row in cursor.fetchall()}
    tokens = Q()
    for key, token in held:
        tokens |= Q(key=key, token=token)
    current = Lease.objects.filter(tokens, scope=LEASE_SCOPE, expires_at__gte=now).exclude(holder="")
    live = set(current.values_list("key", flat=True))
    current.filter(key__in=live).update(holder="", expires_at=now)
    return live


def terminate(
    proc: Process,
    status: str,
    *,
    output: Any = None,
    error: dict | None = None,
    evidence: dict | None = None,
    log: list[process_events.Entry] | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Write the terminal state of a locked process, its terminal event (after ``log``; with
    ``data`` added to the event's data), and wake a parent that waits on it. The caller owns
    the transaction and the lease."""
    now = timezone.now()
    rows, drafts = _set_terminal(
        proc, status, output=output, error=error, evidence=evidence, log=log, now=now, data=data
    )
    _save_terminal(proc)
    _wake_parent(proc, now)
    process_events.write(proc, rows, drafts)  # last: the stream-head lock is held until commit


def _set_terminal(
    proc: Process,
    status: str,
    *,
    output: Any,
    error: dict | None,
    now: Any,
    evidence: dict | None = None,
    log: list[process_events.Entry] | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[list[ProcessEvent], list[EventDraft]]:
    proc.status = status
    proc.output = output
    proc.error = error
    proc.finished_at = proc.updated_at = now
    proc.wait_kind, proc.wait_until, proc.wait_signal, proc.wait_child = WaitKind.NONE, None, "", ""
    data = dict(data or {})
    if error:
        data["error"] = error
    if evidence:
        data["evidence"] = evidence
    return process_events.prepare(proc, [*(log or []), (f"{event_types.PROCESS_TERMINAL_PREFIX}{status}", data)])


TERMINAL_FIELDS = [
    "status",
    "output",
    "error",
    "finished_at",
    "wait_kind",
    "wait_until",
    "wait_signal",
    "wait_child",
    "event_seq",
    "updated_at",
]


def _save_terminal(proc: Process) -> None:
    proc.save(update_fields=TERMINAL_FIELDS)


def _save_terminals(procs: list[Process], now: Any) -> None:
    """``_save_terminal`` for many rows ended by ``_set_terminal(now=now)``: on PostgreSQL one
    ``UPDATE ... FROM (VALUES ...)`` (the per-row values are status, output, error and
    event_seq; the rest is the same for every row), elsewhere one UPDATE per row."""
    if connection.vendor != "postgresql" or len(procs) < 2:
        for proc in procs:
            _save_terminal(proc)
        return
    table = connection.ops.quote_name(Process._meta.db_table)
    values = ", ".join(["(%s, %s, %s::jsonb, %s::jsonb, %s::integer)"] * len(procs))
    params: list[Any] = [
        now,
        now,
        WaitKind.NONE,
        *(
            value
            for p in procs
            for value in (
                p.pk,
                p.status,
                None if p.output is None else json.dumps(p.output),
                None if p.error is None else json.dumps(p.error),
                p.event_seq,
            )
        ),
    ]
    # Keep the SET list in step with TERMINAL_FIELDS.
    sql = (
        f"UPDATE {table} AS p SET status = v.status, output = v.output, error = v.error, "
        "finished_at = %s, updated_at = %s, wait_kind = %s, wait_until = NULL, wait_signal = '', "
        "wait_child = '', event_seq = v.event_seq "
        f"FROM (VALUES {values}) AS v(id, status, output, error, event_seq) WHERE p.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _wake_parent(proc: Process, now: Any) -> None:
    if proc.parent_id:
        woke = Process.objects.filter(
            pk=proc.parent_id, status=ProcessStatus.RUNNING, wait_kind=WaitKind.CHILD, wait_child=proc.id
        ).update(wait_kind=WaitKind.NONE, wait_child="", runnable_since=now)
        if woke:
            dispatch_drive([proc.parent_id])


def finish(claim: Claim, status: str, *, output: Any = None, error: dict | None = None) -> str:
    """Complete a run, only if its token is still current."""
    return _finish(claim, status, output=output, error=error, run=None)


def _finish(claim: Claim, status: str, *, output: Any, error: dict | None, run: ProcessRun | None) -> str:
    with transaction.atomic():
        proc = lock_process(claim.process_id)
        if proc.is_terminal:
            lease_release(scope=LEASE_SCOPE, key=proc.id, token=claim.token)
            return "terminal"
        try:
            lease_check(scope=LEASE_SCOPE, key=proc.id, token=claim.token, lock=True)
        except LeaseLost:
            claim.lost = True
            return "lease_lost"
        log = run._take_pending(proc) if run is not None else []
        lease_release(scope=LEASE_SCOPE, key=proc.id, token=claim.token)
        terminate(proc, status, output=output, error=error, log=log)
    return status
