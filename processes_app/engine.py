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
from django.db import connection, transaction
from django.utils import timezone

from lashops.core.errors import LeaseHeld, LeaseLost
from lashops.core.services import effect_record, lease_acquire, lease_check, lease_release, lease_renew
from processes_app import events as process_events
from processes_app.context import CancelRequested, LeaseGone, Park, ProcessContext, ReplayMismatch
from processes_app.definitions import ProcessDefinition, get_definition
from processes_app.models import Process, ProcessEvent, ProcessStatus, WaitKind
from processes_app.selectors import LEASE_SCOPE, runnable_processes

log = logging.getLogger(__name__)

HOST = socket.gethostname()


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
                except Exception:
                    log.exception("renewing the lease of process %s failed", claim.process_id)
            if idle:
                connection.close()


_keeper = LeaseKeeper()


def claim_runnable(*, limit: int, prefer: list[str] | None = None, holder: str | None = None) -> list[Claim]:
    """Claim up to ``limit`` runnable processes (``prefer`` first). Each gets its own lease."""
    if limit <= 0:
        return []
    now = timezone.now()
    ttl = float(settings.LASHOPS_PROCESS_LEASE_SECONDS)
    claims: list[Claim] = []
    with transaction.atomic():
        candidates: list[str] = []
        base = runnable_processes(now=now)
        if connection.vendor == "postgresql":
            base = base.select_for_update(skip_locked=True, of=("self",))
        if prefer:
            candidates += list(base.filter(pk__in=prefer[:limit]).order_by("pk").values_list("pk", flat=True))
        if len(candidates) < limit:
            rest = base.exclude(pk__in=candidates) if candidates else base
            candidates += list(rest.order_by("pk").values_list("pk", flat=True)[: limit - len(candidates)])
        for process_id in candidates:
            who = holder or holder_id()
            try:
                grant = lease_acquire(scope=LEASE_SCOPE, key=process_id, holder=who, ttl=ttl)
            except LeaseHeld:
                continue
            claims.append(Claim(process_id=process_id, holder=who, token=grant.token))
    return claims


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
        claims = claim_runnable(limit=batch, prefer=prefer)
        prefer = []
        if not claims:
            return ran
        for claim in claims:
            try:
                run_claim(claim)
            except Exception:
                log.exception("running process %s failed", claim.process_id)
            ran += 1
        if time.monotonic() > budget:
            return ran


# --- one run ---------------------------------------------------------------------------


class ProcessRun:
    """The writes one claimed run makes, each fenced by its lease token."""

    def __init__(self, process: Process, claim: Claim, definition: ProcessDefinition) -> None:
        self.process = process
        self.claim = claim
        self.definition = definition

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

    def boundary(self) -> None:
        """Between operations: stop if the lease is gone or a cancel was requested."""
        if self.claim.lost:
            raise LeaseGone()
        requested = Process.objects.filter(pk=self.process.id).values_list("cancel_requested_at", flat=True).first()
        if requested is not None:
            raise CancelRequested()

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
            recorded = effect_record(
                workspace=proc.workspace_id, scope=f"process:{proc.id}", replay_key=key, kind=kind, outcome=outcome
            )
            if then is not None:
                then()
            if log:
                process_events.append(proc, log)
        return recorded

    def record_side(self, *, key: str, kind: str, outcome: dict[str, Any]) -> dict[str, Any]:
        with transaction.atomic():
            proc = self._locked()
            return effect_record(
                workspace=proc.workspace_id, scope=f"process:{proc.id}", replay_key=key, kind=kind, outcome=outcome
            )

    def signal_at(self, name: str, index: int) -> tuple[int, Any] | None:
        row = (
            ProcessEvent.objects.filter(process_id=self.process.id, type=f"signal.{name}")
            .order_by("seq")
            .values_list("seq", "data")[index : index + 1]
        )
        row = list(row)
        return (row[0][0], row[0][1].get("payload")) if row else None

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

    def park(self, park: Park) -> str:
        with transaction.atomic():
            try:
                proc = self._locked()
            except LeaseGone:
                return "lease_lost"
            if proc.cancel_requested_at is not None:
                terminate(proc, ProcessStatus.CANCELLED, error={"code": "cancelled"})
                lease_release(scope=LEASE_SCOPE, key=proc.id, token=self.claim.token)
                return "cancelled"
            if park.ready():
                return "again"
            proc.wait_kind = park.wait_kind
            proc.wait_until = park.until
            proc.wait_signal = park.signal
            proc.wait_child = park.child
            proc.save(update_fields=["wait_kind", "wait_until", "wait_signal", "wait_child", "updated_at"])
            data: dict[str, Any] = {"wait": park.wait_kind}
            if park.until:
                data["until"] = park.until.isoformat()
            if park.signal:
                data["signal"] = park.signal
            if park.child:
                data["child"] = park.child
            process_events.append(proc, [("process.waiting", data)])
            lease_release(scope=LEASE_SCOPE, key=proc.id, token=self.claim.token)
            if park.until is not None:
                delay = max(0.0, (park.until - timezone.now()).total_seconds())
                dispatch_drive_later([proc.id], delay)
        return "parked"


def terminate(
    proc: Process, status: str, *, output: Any = None, error: dict | None = None, evidence: dict | None = None
) -> None:
    """Write the terminal state of a locked process, its terminal event, and wake a parent
    that waits on it. The caller owns the transaction and the lease."""
    now = timezone.now()
    proc.status = status
    proc.output = output
    proc.error = error
    proc.finished_at = now
    proc.wait_kind, proc.wait_until, proc.wait_signal, proc.wait_child = WaitKind.NONE, None, "", ""
    proc.save(
        update_fields=[
            "status",
            "output",
            "error",
            "finished_at",
            "wait_kind",
            "wait_until",
            "wait_signal",
            "wait_child",
            "updated_at",
        ]
    )
    data: dict[str, Any] = {}
    if error:
        data["error"] = error
    if evidence:
        data["evidence"] = evidence
    process_events.append(proc, [(f"process.{status}", data)])
    if proc.parent_id:
        woke = Process.objects.filter(
            pk=proc.parent_id, status=ProcessStatus.RUNNING, wait_kind=WaitKind.CHILD, wait_child=proc.id
        ).update(wait_kind=WaitKind.NONE, wait_child="", runnable_since=now)
        if woke:
            dispatch_drive([proc.parent_id])


def finish(claim: Claim, status: str, *, output: Any = None, error: dict | None = None) -> str:
    """Complete a run, only if its token is still current."""
    with transaction.atomic():
        proc = lock_process(claim.process_id)
        if proc.is_terminal:
            lease_release(scope=LEASE_SCOPE, key=proc.id, token=claim.token)
            return "terminal"
        try:
            lease_check(scope=LEASE_SCOPE, key=proc.id, token=claim.token, lock=True)
        except LeaseLost:
            return "lease_lost"
        terminate(proc, status, output=output, error=error)
        lease_release(scope=LEASE_SCOPE, key=proc.id, token=claim.token)
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


def run_claim(claim: Claim) -> str:
    """Run one claimed process until it parks, finishes or loses its lease."""
    _keeper.add(claim)
    try:
        for _ in range(1000):
            outcome = _run_once(claim)
            if outcome != "again":
                return outcome
        return "again"
    finally:
        _keeper.remove(claim)


def _run_once(claim: Claim) -> str:
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
    run = ProcessRun(process, claim, definition)
    try:
        run.begin()
        ctx = ProcessContext(run)
        value = definition.fn(ctx, process.input)
    except Park as park:
        return run.park(park)
    except CancelRequested:
        return finish(claim, ProcessStatus.CANCELLED, error={"code": "cancelled"})
    except (LeaseGone, LeaseLost):
        return "lease_lost"
    except ReplayMismatch as exc:
        error = _error("replay_mismatch", exc) | {"ordinal": exc.ordinal}
        return finish(claim, ProcessStatus.FAILED, error=error)
    except Exception as exc:
        log.info("process %s failed: %s", claim.process_id, exc)
        return finish(claim, ProcessStatus.FAILED, error=_error("exception", exc))
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        return finish(claim, ProcessStatus.FAILED, error=_error("output_not_json", exc))
    return finish(claim, ProcessStatus.COMPLETED, output=value)


# --- dispatch --------------------------------------------------------------------------


def dispatch_drive(process_ids: list[str]) -> None:
    """Wake a driver for these processes once the current transaction commits."""
    from lashops.core.runner import dispatch
    from processes_app.tasks import process_drive_task

    ensure_scheduler()
    dispatch(process_drive_task, process_ids=list(process_ids))


def dispatch_drive_later(process_ids: list[str], delay: float) -> None:
    """A fast-path wake-up for a timer. The sweep is what makes timers durable."""
    from lashops.core.runner import run_in_process, runner_mode
    from processes_app.tasks import process_drive_task

    kwargs = {"process_ids": list(process_ids)}
    if runner_mode() == "celery":
        transaction.on_commit(lambda: process_drive_task.apply_async(kwargs=kwargs, countdown=delay))
    else:

        def later() -> None:
            timer = threading.Timer(delay + 0.01, lambda: run_in_process(process_drive_task, **kwargs))
            timer.daemon = True
            timer.start()

        transaction.on_commit(later)


def ensure_scheduler() -> None:
    from processes_app.scheduler import ensure_started

    ensure_started()
