"""Running claims: ``drive`` claims batches and runs them until none is left; ``run_claim``
runs one claimed process until it parks, finishes or loses its lease; ``ProcessRun`` makes
that run's writes, each fenced by its lease token; ``CancelWatch`` reads a batch's cancel
requests at once."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import LeaseLost
from lashops.core.models import Workspace
from lashops.core.services import effect_record, lease_check, lease_release
from processes_app import events as process_events
from processes_app.context import ProcessContext
from processes_app.definitions import ProcessDefinition, get_definition
from processes_app.engine.claims import (
    DATABASE_ERRORS,
    Claim,
    _db_retry,
    _keeper,
    _release_quietly,
    claim_runnable,
    lock_process,
)
from processes_app.engine.completion import Completions, _finish, finish, terminate
from processes_app.engine.dispatch import dispatch_drive_later
from processes_app.errors import CancelRequested, DatabaseUnavailable, LeaseGone, Park, ReplayMismatch
from processes_app.models import Process, ProcessEvent, ProcessStatus, WaitKind
from processes_app.selectors import LEASE_SCOPE
from sessions_app import services as session_services
from sessions_app.models import Session

log = logging.getLogger(__name__)


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
                entry: tuple[str, dict[str, Any]] = (event_types.PROCESS_STARTED, {"holder": self.claim.holder})
            else:
                entry = (event_types.PROCESS_RESUMED, {"holder": self.claim.holder, "run": proc.run_count + 1})
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
            ProcessEvent.objects.filter(process_id=self.process.id, type=f"{event_types.SIGNAL_PREFIX}{name}")
            .order_by("seq")
            .values_list("seq", "data")[index : index + 1]
        )
        row = list(row)  # type: ignore[assignment]  # the page, fetched
        return (row[0][0], row[0][1].get("payload")) if row else None

    @_guarded
    def child_result(self, child_id: str) -> dict[str, Any] | None:
        row = Process.objects.filter(pk=child_id).values("status", "output", "error").first()
        if row is None:
            return {"status": "missing", "output": None, "error": {"code": "child_missing"}}
        return row if row["status"] != ProcessStatus.RUNNING else None  # type: ignore[return-value]  # a values() row

    def deliver_wake(self, *, source_key: str, payload: dict[str, Any]) -> None:
        if not self.process.wake_session_id:
            return  # recorded, delivered nowhere
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
            rows, drafts = process_events.prepare(proc, [*entries, (event_types.PROCESS_WAITING, data)])
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


def enqueue_wake(
    *, workspace: Workspace, session_id: str, process_id: str, source_key: str, payload: dict[str, Any]
) -> None:
    """Queue a process event as input of its wake-target session, exactly once per source key.
    A session that no longer exists gets nothing (the event stays in the process log)."""
    session = Session.objects.filter(workspace=workspace, pk=session_id).first()
    if session is None:
        return
    text = f"[process {process_id}] {payload['event']}: {json.dumps(payload.get('data') or {}, sort_keys=True)}"
    session_services.input_enqueue(session=session, text=text, source_key=source_key[:200])


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
        process = Process.objects.select_related("workspace").filter(pk=claim.process_id).first()  # type: ignore[assignment]  # None checked below
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
