"""The process runner: claim runnable processes under a lease, run them, park or finish them.

One code path, two drivers: the Celery task ``lashops.processes.drive`` and the in-process
thread driver of the embedded default both call :func:`drive`. A drive claims up to a
batch of runnable rows (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, then a
conditional-UPDATE lease per row), runs them, and keeps claiming until nothing is left or
its time budget is spent, so one wake-up can drive many processes.

Every write made while running checks the process's fencing token under a row lock; a
run whose lease was lost or superseded stops without writing. A :class:`LeaseKeeper`
thread renews the leases this OS process holds.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from lashops.core.errors import LeaseLost
from lashops.core.events import EventDraft, deferred, publish_many
from lashops.core.models import Workspace
from lashops.core.services import effect_record, lease_acquire_many, lease_check, lease_release, lease_renew
from processes_app import events as process_events
from processes_app.context import Journal, ProcessContext, load_journals
from processes_app.definitions import ProcessDefinition, get_definition
from processes_app.errors import CancelRequested, DatabaseUnavailable, LeaseGone, Park, ReplayMismatch
from processes_app.models import Disposition, Process, ProcessEvent, ProcessStatus, WaitKind
from processes_app.selectors import LEASE_SCOPE, runnable_processes

log = logging.getLogger(__name__)

HOST = socket.gethostname()

# What the engine's own reads and writes raise when the database cannot be reached (a restart,
# a failover, a dropped connection). Never a definition failure: the run stops, the process
# is re-claimed when the database is back.
DATABASE_ERRORS = (OperationalError, InterfaceError)


def _db_retry(fn: Callable[[], Any], *, until: float | None) -> Any:
    """Run ``fn`` (one transaction of the engine's). If the database cannot be reached, retry
    until ``until`` (monotonic; None: do not retry), then raise ``DatabaseUnavailable``. Inside
    an outer transaction the error goes up as it is: the outermost caller retries."""
    delay = 0.1
    while True:
        try:
            return fn()
        except DATABASE_ERRORS as exc:
            if connection.in_atomic_block:
                raise
            if until is None or time.monotonic() + delay >= until:
                raise DatabaseUnavailable(str(exc)) from exc
            log.warning("database unreachable (%s); retrying a write that records a finished step", exc)
            connection.close()  # a broken connection is replaced on the next attempt
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _release_quietly(claims: list[Claim]) -> None:
    """Hand back leases the drive will not use; if the database is still away they lapse."""
    for claim in claims:
        _keeper.remove(claim)
        try:
            lease_release(scope=LEASE_SCOPE, key=claim.process_id, token=claim.token)
        except DATABASE_ERRORS:
            connection.close()
            return


def holder_id() -> str:
    """``host:pid:nonce`` — the host and pid let the sweep prove a holder is gone."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:10]}"


def holder_provably_gone(holder: str) -> bool:
    """True only when the holder ran on this host and its pid no longer exists."""
    parts = holder.split(":")
    if len(parts) < 3 or parts[0] != HOST:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lock_process(process_id: str) -> Process:
    return Process.objects.select_for_update(of=("self",)).select_related("workspace").get(pk=process_id)


# --- claims and the lease keeper -------------------------------------------------------


@dataclass(eq=False)
class Claim:
    process_id: str
    holder: str
    token: int
    renewed_at: float = 0.0
    lost: bool = False
    # Set when the claim transaction also began the run (see ``claim_runnable``): the row as
    # it was written then, and its journal as read then.
    begun: bool = False
    process: Process | None = None
    journal: Journal | None = None


class LeaseKeeper:
    """Renews the leases this OS process holds, from one daemon thread (re-created after fork)."""

    def __init__(self) -> None:
        self._claims: set[Claim] = set()
        self._lock = threading.Lock()
        self._pid = 0
        self._thread: threading.Thread | None = None

    def held(self) -> int:
        with self._lock:
            return len(self._claims) if self._pid == os.getpid() else 0

    def add(self, claim: Claim) -> None:
        claim.renewed_at = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():
                self._claims = set()
                self._thread = None
                self._pid = os.getpid()
            self._claims.add(claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lashops-lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, claim: Claim) -> None:
        with self._lock:
            self._claims.discard(claim)

    def _loop(self) -> None:
        while True:
            ttl = float(settings.LASHOPS_PROCESS_LEASE_SECONDS)
            time.sleep(max(0.05, ttl / 6))
            with self._lock:
                due = [c for c in self._claims if time.monotonic() - c.renewed_at >= ttl / 3]
                idle = not self._claims
            for claim in due:
                try:
                    lease_renew(scope=LEASE_SCOPE, key=claim.process_id, token=claim.token, ttl=ttl)
                    claim.renewed_at = time.monotonic()
                except LeaseLost:
                    claim.lost = True
                except DATABASE_ERRORS as exc:
                    # An outage: the next round tries again (one line per claim, no traceback).
                    log.warning("renewing the lease of process %s failed: %s", claim.process_id, exc)
                    connection.close()
                except Exception:
                    log.exception("renewing the lease of process %s failed", claim.process_id)
            if idle:
                connection.close()


_keeper = LeaseKeeper()


def claim_runnable(*, limit: int, prefer: list[str] | None = None, holder: str | None = None) -> list[Claim]:
    """Claim up to ``limit`` runnable processes (``prefer`` first) in one transaction: pick rows
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), take their leases in one batch, and begin the
    runs of the rerunnable ones (``process.started``/``resumed``, one stream publish for the
    batch). Owner-bound rows begin only when they actually run: claiming one that then never
    runs must not make it look started (a started owner-bound row is abandoned, not re-run)."""
    if limit <= 0:
        return []
    now = timezone.now()
    ttl = float(settings.LASHOPS_PROCESS_LEASE_SECONDS)
    who = holder or holder_id()
    # deferred(): the batch's started/resumed events are written after the journals are read,
    # so other writers of the workspace wait on its stream head only for the commit.
    with transaction.atomic(), deferred():
        base = runnable_processes(now=now).select_related("workspace")
        if connection.vendor == "postgresql":
            base = base.select_for_update(skip_locked=True, of=("self",))
        # The ids a wake-up named are looked up by key (no scan and sort of every runnable row);
        # only when none of them is claimable any more does the claim take the lowest runnable
        # ones. A partly taken batch is not topped up: the drive loop claims again anyway.
        rows = list(base.filter(pk__in=prefer[:limit]).order_by("pk")) if prefer else []
        if not rows:
            rows = list(base.order_by("pk")[:limit])
        grants = lease_acquire_many(scope=LEASE_SCOPE, keys=[p.pk for p in rows], holder=who, ttl=ttl)
        claims = [
            Claim(process_id=p.pk, holder=who, token=grants[p.pk].token, process=p) for p in rows if p.pk in grants
        ]
        begun = [c for c in claims if _begins_at_claim(c.process)]
        _begin_batch(begun, now)
        journals = load_journals([c.process_id for c in begun]) if begun else {}
    for claim in claims:
        claim.journal = journals.get(claim.process_id)
        if not claim.begun:
            claim.process = None  # the run begins (and re-reads the row) itself
    return claims


def _begins_at_claim(process: Process | None) -> bool:
    return (
        process is not None
        and process.disposition == Disposition.RERUNNABLE
        and process.cancel_requested_at is None
        and get_definition(process.definition_name) is not None
    )


def _begin_batch(claims: list[Claim], now: Any) -> None:
    """The writes of ``ProcessRun.begin`` for many claimed rows, in the claim transaction."""
    if not claims:
        return
    rows: list[ProcessEvent] = []
    drafts: dict[int, tuple[Workspace, list[EventDraft]]] = {}
    for claim in claims:
        proc = claim.process
        assert proc is not None
        claim.begun = True
        if proc.first_started_at is None:
            proc.first_started_at, proc.first_started_by = now, claim.holder
            entry = ("process.started", {"holder": claim.holder})
        else:
            entry = ("process.resumed", {"holder": claim.holder, "run": proc.run_count + 1})
        proc.wait_kind, proc.wait_until, proc.wait_signal, proc.wait_child = WaitKind.NONE, None, "", ""
        proc.run_count += 1
        proc.updated_at = now
        new_rows, new_drafts = process_events.prepare(proc, [entry])
        rows += new_rows
        drafts.setdefault(proc.workspace_id, (proc.workspace, []))[1].extend(new_drafts)
    # One statement for the batch: every claimed row gets the same changes (one event each).
    holder = claims[0].holder
    Process.objects.filter(pk__in=[c.process_id for c in claims]).update(
        wait_kind=WaitKind.NONE,
        wait_until=None,
        wait_signal="",
        wait_child="",
        run_count=F("run_count") + 1,
        event_seq=F("event_seq") + 1,
        first_started_by=Case(When(first_started_at__isnull=True, then=Value(holder)), default=F("first_started_by")),
        first_started_at=Coalesce(F("first_started_at"), Value(now)),
        updated_at=now,
    )
    ProcessEvent.objects.bulk_create(rows)
    for workspace, workspace_drafts in drafts.values():
        publish_many(workspace=workspace, drafts=workspace_drafts)


def claim_one(*, process_id: str) -> Claim | None:
    """Claim one specific process if it is runnable (tests and operators use this)."""
    claims = claim_runnable(limit=1, prefer=[process_id])
    if claims and claims[0].process_id != process_id:
        release_claims(claims)
        return None
    return claims[0] if claims else None


def release_claims(claims: list[Claim]) -> None:
    for claim in claims:
        lease_release(scope=LEASE_SCOPE, key=claim.process_id, token=claim.token)


def drive(*, process_ids: list[str] | None = None) -> int:
    """Claim and run runnable processes until none is left, the per-worker concurrency cap is
    reached or the time budget is spent. Returns how many runs happened."""
    budget = time.monotonic() + float(settings.LASHOPS_PROCESS_DRIVE_SECONDS)
    prefer = list(process_ids or [])
    ran = 0
    while True:
        capacity = int(settings.LASHOPS_PROCESS_CONCURRENCY) - _keeper.held()
        batch = min(int(settings.LASHOPS_PROCESS_CLAIM_BATCH), capacity)
        claimed_at = time.monotonic()
        try:
            claims = claim_runnable(limit=batch, prefer=prefer)
        except DATABASE_ERRORS as exc:
            log.warning("database unreachable; the drive stops (the sweep re-dispatches): %s", exc)
            connection.close()
            return ran
        prefer = []
        if not claims:
            return ran
        for claim in claims:
            _keeper.add(claim)  # renewed while it waits for its turn in this batch
        completions = Completions()
        cancels = CancelWatch([c.process_id for c in claims], read_at=claimed_at)
        unrun: list[Claim] = []
        try:
            for index, claim in enumerate(claims):
                outcome = ""
                try:
                    outcome = run_claim(claim, completions=completions, cancels=cancels)
                except Exception:
                    log.exception("running process %s failed", claim.process_id)
                ran += 1
                if outcome == "db_down" or (completions.due() and not completions.flush()):
                    # Stop here: every further claim would run a step it could not record.
                    unrun = claims[index + 1 :]
                    if outcome == "db_down":
                        unrun.insert(0, claim)
                    break
        finally:
            completions.flush()
        if unrun:
            log.warning("database unreachable; the drive stops and leaves %d claimed processes", len(unrun))
            connection.close()
            _release_quietly(unrun)
            return ran
        if time.monotonic() > budget:
            return ran


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


# --- one run ---------------------------------------------------------------------------


class CancelWatch:
    """Cancel requests for a claimed batch, read for all of its runs in one statement.

    A run's first boundary (before its first operation: nothing of the definition has run
    yet) asks here instead of reading its own row. The claim's read of the rows counts as the
    first; it is repeated (one statement for the batch) once older than
    ``LASHOPS_PROCESS_GROUP_COMMIT_SECONDS``, so a run waiting its turn in the batch still
    stops before its first step for a cancel requested while it was queued (seen within that
    window). Every later boundary of a run reads its own row, as before: a cancel made by or
    during a step stops the run at its next boundary."""

    def __init__(self, process_ids: list[str], *, read_at: float | None = None) -> None:
        self.pending = set(process_ids)
        self.requested: set[str] = set()  # (a claim begins no run whose cancel it saw)
        self.read_at = read_at  # the claim itself read the rows: its read counts as the first

    def cancelled(self, process_id: str) -> bool:
        max_age = float(settings.LASHOPS_PROCESS_GROUP_COMMIT_SECONDS)
        if process_id not in self.pending:
            return self._read_one(process_id)
        if self.read_at is None or time.monotonic() - self.read_at > max_age:
            read_at = time.monotonic()
            self.requested = set(
                Process.objects.filter(pk__in=self.pending, cancel_requested_at__isnull=False).values_list(
                    "pk", flat=True
                )
            )
            self.read_at = read_at  # only once the read succeeded: a failed one counts for nothing
        self.pending.discard(process_id)
        return process_id in self.requested

    @staticmethod
    def _read_one(process_id: str) -> bool:
        return Process.objects.filter(pk=process_id, cancel_requested_at__isnull=False).exists()


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """A ProcessRun read or write that meets an unreachable database raises
    ``DatabaseUnavailable`` (never an error of the definition); while a finished step's record
    is held back it is retried first, so a step that ran during an outage is not run again."""

    @functools.wraps(method)
    def wrapper(self: ProcessRun, *args: Any, **kwargs: Any) -> Any:
        held = self.pending
        until = None
        if held is not None:
            until = self.claim.renewed_at + float(settings.LASHOPS_PROCESS_LEASE_SECONDS)

        def attempt() -> Any:
            try:
                return method(self, *args, **kwargs)
            except DATABASE_ERRORS:
                self.pending = held  # the transaction that took it did not commit
                raise

        try:
            return _db_retry(attempt, until=until)
        except DatabaseUnavailable:
            self.db_down = True
            raise

    return wrapper


class ProcessRun:
    """The writes one claimed run makes, each fenced by its lease token.

    A completed step's record is held back (``pending``) and written by the next fenced
    transaction of this run: the next operation's record, the park, or the terminal write.
    Before another step's function runs it is written on its own, so at most one finished
    step is ever unrecorded (a crash re-runs that one step, as before), while a one-step
    process commits its step and its completion together.
    """

    def __init__(
        self, process: Process, claim: Claim, definition: ProcessDefinition, *, cancels: CancelWatch | None = None
    ) -> None:
        self.process = process
        self.claim = claim
        self.definition = definition
        self.pending: tuple[str, str, dict[str, Any], list[process_events.Entry]] | None = None
        self.cancels = cancels  # for the first boundary only (see CancelWatch)
        self.db_down = False  # set when the database could not be reached: the run stops

    def _locked(self) -> Process:
        if self.claim.lost:
            raise LeaseGone()
        proc = lock_process(self.process.id)
        try:
            lease_check(scope=LEASE_SCOPE, key=proc.id, token=self.claim.token, lock=True)
        except LeaseLost:
            self.claim.lost = True
            raise LeaseGone() from None
        if proc.status != ProcessStatus.RUNNING:
            raise LeaseGone()
        return proc

    @_guarded
    def begin(self) -> None:
        with transaction.atomic():
            proc = self._locked()
            fields = ["wait_kind", "wait_until", "wait_signal", "wait_child", "run_count", "updated_at"]
            if proc.first_started_at is None:
                proc.first_started_at = timezone.now()
                proc.first_started_by = self.claim.holder
                fields += ["first_started_at", "first_started_by"]
                entry = ("process.started", {"holder": self.claim.holder})
            else:
                entry = ("process.resumed", {"holder": self.claim.holder, "run": proc.run_count + 1})
            proc.wait_kind, proc.wait_until, proc.wait_signal, proc.wait_child = WaitKind.NONE, None, "", ""
            proc.run_count += 1
            proc.save(update_fields=fields)
            process_events.append(proc, [entry])
        self.process = proc

    @_guarded
    def boundary(self) -> None:
        """Between operations: stop if the lease is gone or a cancel was requested."""
        if self.claim.lost:
            raise LeaseGone()
        cancels, self.cancels = self.cancels, None
        if cancels is not None:
            requested = cancels.cancelled(self.process.id)
        else:
            requested = CancelWatch._read_one(self.process.id)
        if requested:
            raise CancelRequested()

    def defer(self, *, key: str, kind: str, outcome: dict[str, Any], log: list[process_events.Entry]) -> None:
        """Hold a completed step's record for the next fenced write (see the class docstring)."""
        json.dumps(outcome)  # fail now, inside the definition, as an immediate record would
        assert self.pending is None, "flush() before running the next step"
        self.pending = (key, kind, outcome, log)

    @_guarded
    def flush(self) -> None:
        """Write the held-back step record now (before another step's function runs)."""
        if self.pending is not None:
            with transaction.atomic():
                proc = self._locked()
                process_events.append(proc, self._take_pending(proc))

    def _take_pending(self, proc: Process) -> list[process_events.Entry]:
        """Record the held-back effect in the caller's fenced transaction; return its log entries."""
        if self.pending is None:
            return []
        key, kind, outcome, log = self.pending
        effect_record(
            workspace=proc.workspace_id, scope=f"process:{proc.id}", replay_key=key, kind=kind, outcome=outcome
        )
        self.pending = None  # (put back by ``_guarded`` if this transaction does not commit)
        return log

    @_guarded
    def record(
        self,
        *,
        key: str,
        kind: str,
        outcome: dict[str, Any],
        log: list[tuple[str, dict[str, Any]]],
        then: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        with transaction.atomic():
            proc = self._locked()
            entries = self._take_pending(proc)
            recorded = effect_record(
                workspace=proc.workspace_id, scope=f"process:{proc.id}", replay_key=key, kind=kind, outcome=outcome
            )
            if then is not None:
                then()
            entries += log
            if entries:
                process_events.append(proc, entries)
        return recorded

    @_guarded
    def record_side(self, *, key: str, kind: str, outcome: dict[str, Any]) -> dict[str, Any]:
        with transaction.atomic():
            proc = self._locked()
            entries = self._take_pending(proc)
            if entries:
                process_events.append(proc, entries)
            return effect_record(
                workspace=proc.workspace_id, scope=f"process:{proc.id}", replay_key=key, kind=kind, outcome=outcome
            )

    @_guarded
    def signal_at(self, name: str, index: int) -> tuple[int, Any] | None:
        row = (
            ProcessEvent.objects.filter(process_id=self.process.id, type=f"signal.{name}")
            .order_by("seq")
            .values_list("seq", "data")[index : index + 1]
        )
        row = list(row)
        return (row[0][0], row[0][1].get("payload")) if row else None

    @_guarded
    def child_result(self, child_id: str) -> dict[str, Any] | None:
        row = Process.objects.filter(pk=child_id).values("status", "output", "error").first()
        if row is None:
            return {"status": "missing", "output": None, "error": {"code": "child_missing"}}
        return row if row["status"] != ProcessStatus.RUNNING else None

    def deliver_wake(self, *, source_key: str, payload: dict[str, Any]) -> None:
        if not self.process.wake_session_id:
            return  # recorded, delivered nowhere
        from processes_app.sessions_bridge import enqueue_wake

        enqueue_wake(
            workspace=self.process.workspace,
            session_id=self.process.wake_session_id,
            process_id=self.process.id,
            source_key=source_key,
            payload=payload,
        )

    @_guarded
    def park(self, park: Park) -> str:
        with transaction.atomic():
            try:
                proc = self._locked()
            except LeaseGone:
                return "lease_lost"
            entries = self._take_pending(proc)
            if proc.cancel_requested_at is not None:
                lease_release(scope=LEASE_SCOPE, key=proc.id, token=self.claim.token)
                terminate(proc, ProcessStatus.CANCELLED, error={"code": "cancelled"}, log=entries)
                return "cancelled"
            if park.ready():
                if entries:
                    process_events.append(proc, entries)
                return "again"
            proc.wait_kind = park.wait_kind
            proc.wait_until = park.until
            proc.wait_signal = park.signal
            proc.wait_child = park.child
            data: dict[str, Any] = {"wait": park.wait_kind}
            if park.until:
                data["until"] = park.until.isoformat()
            if park.signal:
                data["signal"] = park.signal
            if park.child:
                data["child"] = park.child
            rows, drafts = process_events.prepare(proc, [*entries, ("process.waiting", data)])
            proc.save(update_fields=["wait_kind", "wait_until", "wait_signal", "wait_child", "event_seq", "updated_at"])
            lease_release(scope=LEASE_SCOPE, key=proc.id, token=self.claim.token)
            process_events.write(proc, rows, drafts)
            if park.until is not None:
                delay = max(0.0, (park.until - timezone.now()).total_seconds())
                dispatch_drive_later([proc.id], delay)
        return "parked"

    @_guarded
    def finish(self, status: str, *, output: Any = None, error: dict | None = None) -> str:
        """Complete the run with the held-back step record, only if the token is still current."""
        return _finish(self.claim, status, output=output, error=error, run=self)


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
    return process_events.prepare(proc, [*(log or []), (f"process.{status}", data)])


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


def _due(process: Process) -> bool:
    now = timezone.now()
    if process.wait_kind == WaitKind.NONE:
        return True
    if process.wait_kind in (WaitKind.TIMER, WaitKind.SIGNAL):
        return process.wait_until is not None and process.wait_until <= now
    if process.wait_kind == WaitKind.CHILD:
        status = Process.objects.filter(pk=process.wait_child).values_list("status", flat=True).first()
        return status != ProcessStatus.RUNNING
    return False


def _error(code: str, exc: BaseException) -> dict[str, Any]:
    return {"code": code, "type": type(exc).__name__, "message": str(exc)[:2000]}


def run_claim(claim: Claim, *, completions: Completions | None = None, cancels: CancelWatch | None = None) -> str:
    """Run one claimed process until it parks, finishes or loses its lease. With
    ``completions``, a completed or failed run is queued there (still leased) to be written
    with the rest of its batch."""
    _keeper.add(claim)
    outcome = "again"
    try:
        for _ in range(1000):
            outcome = _run_once(claim, completions, cancels)
            cancels = None  # a second pass is a later boundary
            if outcome != "again":
                return outcome
        return outcome
    finally:
        if outcome != "queued":
            _keeper.remove(claim)


def _run_once(claim: Claim, completions: Completions | None = None, cancels: CancelWatch | None = None) -> str:
    """One pass of a claimed run; ``db_down`` when the engine could not reach the database
    (nothing is recorded as the definition's failure: the process is re-claimed later)."""
    try:
        return _run_pass(claim, completions, cancels)
    except (DatabaseUnavailable, *DATABASE_ERRORS) as exc:
        log.warning("process %s stops: database unreachable (%s)", claim.process_id, exc)
        return "db_down"


def _run_pass(claim: Claim, completions: Completions | None, cancels: CancelWatch | None) -> str:
    begun, claim.process = claim.process, None  # begun by the claim: only for the first pass
    journal, claim.journal = claim.journal, None
    if begun is not None:
        process = begun
        definition = get_definition(process.definition_name)
    else:
        process = Process.objects.select_related("workspace").filter(pk=claim.process_id).first()
        if process is None:
            return "missing"
        if process.is_terminal:
            lease_release(scope=LEASE_SCOPE, key=process.id, token=claim.token)
            return "terminal"
        if process.cancel_requested_at is not None:
            return finish(claim, ProcessStatus.CANCELLED, error={"code": "cancelled"})
        if process.abandon_requested_at is not None or not _due(process):
            lease_release(scope=LEASE_SCOPE, key=process.id, token=claim.token)
            return "not_due"
        definition = get_definition(process.definition_name)
        if definition is None:
            return finish(
                claim,
                ProcessStatus.FAILED,
                error={"code": "unknown_definition", "message": f"no definition {process.definition_name!r}"},
            )
    assert definition is not None
    run = ProcessRun(process, claim, definition, cancels=cancels)
    if begun is None:
        run.begin()
    ctx = ProcessContext(run, journal=journal if begun is not None else None)
    try:
        value = definition.fn(ctx, process.input)
        if run.db_down:
            raise DatabaseUnavailable("the definition went on after the database became unreachable")
    except DatabaseUnavailable:
        raise
    except Park as park:
        return run.park(park)
    except CancelRequested:
        return run.finish(ProcessStatus.CANCELLED, error={"code": "cancelled"})
    except (LeaseGone, LeaseLost):
        return "lease_lost"
    except ReplayMismatch as exc:
        error = _error("replay_mismatch", exc) | {"ordinal": exc.ordinal}
        return run.finish(ProcessStatus.FAILED, error=error)
    except Exception as exc:
        if run.db_down:  # the definition caught our DatabaseUnavailable and failed otherwise
            raise DatabaseUnavailable(str(exc)) from exc
        log.info("process %s failed: %s", claim.process_id, exc)
        return _end(run, completions, ProcessStatus.FAILED, error=_error("exception", exc))
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        return _end(run, completions, ProcessStatus.FAILED, error=_error("output_not_json", exc))
    return _end(run, completions, ProcessStatus.COMPLETED, output=value)


def _end(run: ProcessRun, completions: Completions | None, status: str, **result: Any) -> str:
    if completions is None:
        return run.finish(status, **result)
    completions.add(run, status, **result)
    return "queued"


# --- dispatch --------------------------------------------------------------------------


def dispatch_drive(process_ids: list[str]) -> None:
    """Wake a driver for these processes once the current transaction commits.

    Wake-ups asked for in one transaction are coalesced: one drive per claim batch of ids
    (a transaction that starts 2,000 processes sends 125 tasks, not 2,000). Every call
    registers a commit hook that sends whatever has accumulated on this connection, so a
    rolled-back savepoint loses no wake-up of the rest; an id from a rolled-back block may
    be sent anyway, which is harmless (a drive re-checks state)."""
    conn = transaction.get_connection()
    pending: list[str] | None = getattr(conn, "_lashops_drive_ids", None)
    if pending is None:
        pending = conn._lashops_drive_ids = []
    pending.extend(process_ids)
    transaction.on_commit(lambda: _send_drives(conn))


def _send_drives(conn: Any) -> None:
    from lashops.core.runner import dispatch
    from processes_app.tasks import process_drive_task

    ids, conn._lashops_drive_ids = list(dict.fromkeys(conn._lashops_drive_ids)), []
    if not ids:
        return
    ensure_scheduler()
    size = int(settings.LASHOPS_PROCESS_CLAIM_BATCH)
    for start in range(0, len(ids), size):
        dispatch(process_drive_task, process_ids=ids[start : start + size])


def dispatch_drive_later(process_ids: list[str], delay: float) -> None:
    """A fast-path wake-up for a timer. The sweep is what makes timers durable."""
    from lashops.core.runner import run_in_process, runner_mode, send
    from processes_app.tasks import process_drive_task

    kwargs = {"process_ids": list(process_ids)}
    if runner_mode() == "celery":
        transaction.on_commit(lambda: send(process_drive_task, kwargs, countdown=delay))
    else:

        def later() -> None:
            timer = threading.Timer(delay + 0.01, lambda: run_in_process(process_drive_task, **kwargs))
            timer.daemon = True
            timer.start()

        transaction.on_commit(later)


def ensure_scheduler() -> None:
    from processes_app.scheduler import ensure_started

    ensure_started()
