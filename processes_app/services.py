"""Writes for processes: start, signal, cancel, abandon, re-drive, grants, the sweep,
retention, and what happens to processes when a session is deleted."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import Conflict, InvalidInput, NotFound
from lashops.core.events import publish_many
from lashops.core.models import Effect, Lease, Workspace
from processes_app import events as process_events
from processes_app.definitions import get_definition, require_definition, validate_signal
from processes_app.engine import dispatch_drive, holder_provably_gone, lock_process, terminate
from processes_app.errors import (
    CompletionConflict,
    DeadlineExceeded,
    NotExternallyOwned,
    ProcessFinished,
    RegistrationConflict,
)
from processes_app.models import (
    TERMINAL_STATUSES,
    Disposition,
    Process,
    ProcessEvent,
    ProcessGrant,
    ProcessKind,
    ProcessStatus,
    TriggerSubscription,
    WaitKind,
)
from processes_app.selectors import LEASE_SCOPE, live_lease_q, runnable_processes
from sessions_app.selectors import session_workspaces

process_id_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
    "Use 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
)


def _registration_hash(**fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _get_locked(workspace: Workspace, process_id: str) -> Process:
    try:
        proc = lock_process(process_id)
    except Process.DoesNotExist:
        raise NotFound(f"no process {process_id!r}") from None
    if proc.workspace_id != workspace.pk:
        raise NotFound(f"no process {process_id!r}")
    return proc


# --- start ------------------------------------------------------------------------------


def require_sessions(*, workspace: Workspace, references: dict[str, str]) -> None:
    """Raise ``NotFound`` (404, the fields named in ``details``) unless every session in
    ``references`` (``{field path: session id}``, empty ids skipped) belongs to ``workspace``.
    Another workspace's session answers exactly like one that does not exist."""
    wanted = {path: sid for path, sid in references.items() if sid}
    if not wanted:
        return
    owners = session_workspaces(set(wanted.values()))
    missing = [
        {"path": path, "message": f"no session {sid!r} in this workspace", "type": "not_found"}
        for path, sid in wanted.items()
        if owners.get(sid) != workspace.pk
    ]
    if missing:
        fields = ", ".join(item["path"] for item in missing)
        raise NotFound(f"unknown session in {fields}", code="session_not_found", details=missing)


def _session_references(path: str, wake_session_id: str, grant_session_ids: Iterable[str]) -> dict[str, str]:
    refs = {f"{path}.wake_session": wake_session_id}
    refs.update({f"{path}.grant_sessions.{i}": sid for i, sid in enumerate(grant_session_ids)})
    return refs


@dataclass(frozen=True)
class ProcessStartSpec:
    """One process of a ``process_start_many`` call (the fields of ``process_start``)."""

    definition: str = ""
    disposition: str = ""
    input: Any = None
    process_id: str | None = None
    kind: str = ProcessKind.DEFINITION
    wake_session_id: str = ""
    grant_session_ids: tuple[str, ...] = ()
    timeout_seconds: float | None = None


_DISPOSITIONS = frozenset(Disposition.values)
_KINDS = frozenset(ProcessKind.values)


def _new_process(
    *,
    workspace: Workspace,
    definition: str,
    input: Any,
    disposition: str,
    process_id: str | None,
    kind: str,
    provenance: dict[str, Any] | None,
    wake_session_id: str,
    parent_id: str | None,
    now: Any,
    path: str = "body",
    timeout_seconds: float | None = None,
) -> Process:
    """Validate a registration and build its unsaved row (``registration_hash`` set). An
    externally owned process waits on its owner (``wait_kind`` external), until
    ``timeout_seconds`` from now when given (the sweep fails it after that)."""
    if disposition not in _DISPOSITIONS:
        raise InvalidInput(
            f"disposition must be one of {Disposition.values}",
            details=[{"path": f"{path}.disposition", "message": f"one of {Disposition.values}"}],
        )
    if kind not in _KINDS:
        raise InvalidInput(f"kind must be one of {ProcessKind.values}")
    version = 1
    if timeout_seconds is not None and (disposition != Disposition.EXTERNALLY_OWNED or timeout_seconds <= 0):
        message = "a timeout is for externally owned processes only, and must be positive"
        raise InvalidInput(message, details=[{"path": f"{path}.timeout_seconds", "message": message}])
    if kind == ProcessKind.EXTERNAL:
        if disposition != Disposition.EXTERNALLY_OWNED:
            raise InvalidInput("an external process must be externally_owned")
    else:
        version = require_definition(definition).version
    process_id = process_id or f"p-{uuid.uuid4().hex}"
    try:
        process_id_validator(process_id)
    except Exception as exc:
        raise InvalidInput(
            f"invalid process id: {exc}", details=[{"path": f"{path}.id", "message": str(exc)}]
        ) from None
    input = {} if input is None else input
    registration = _registration_hash(
        kind=kind,
        definition=definition,
        version=version,
        input=input,
        disposition=disposition,
        wake=wake_session_id,
        parent=parent_id,
        **({} if timeout_seconds is None else {"timeout": timeout_seconds}),
    )
    external = disposition == Disposition.EXTERNALLY_OWNED
    return Process(
        id=process_id,
        workspace=workspace,
        kind=kind,
        definition_name=definition,
        definition_version=version,
        input=input,
        disposition=disposition,
        registration_hash=registration,
        provenance=provenance or {},
        wake_session_id=wake_session_id,
        parent_id=parent_id,
        runnable_since=now,
        wait_kind=WaitKind.EXTERNAL if external else WaitKind.NONE,
        wait_until=now + timedelta(seconds=timeout_seconds) if timeout_seconds is not None else None,
    )


def _created_entry(proc: Process) -> process_events.Entry:
    data = {"kind": proc.kind, "disposition": proc.disposition, "provenance": proc.provenance, "parent": proc.parent_id}
    if proc.wait_until is not None:
        data["deadline"] = proc.wait_until.isoformat()
    return (event_types.PROCESS_CREATED, data)


def process_start(
    *,
    workspace: Workspace,
    definition: str = "",
    input: Any = None,
    disposition: str,
    process_id: str | None = None,
    kind: str = ProcessKind.DEFINITION,
    provenance: dict[str, Any] | None = None,
    wake_session_id: str = "",
    parent_id: str | None = None,
    grant_session_ids: list[str] | tuple[str, ...] = (),
    timeout_seconds: float | None = None,
    check_references: bool = True,
) -> tuple[Process, bool]:
    """Register a process (durable intent only) and wake a driver after commit. Returns
    ``(process, created)``. Idempotent by id and registration hash: the same registration
    returns the existing row; a different one under the same id raises ``registration_conflict``.
    An externally owned process is never driven: its owner ends it with ``process_complete``
    (by ``timeout_seconds`` from now, if given). The wake and grant sessions must belong to the
    workspace (404 ``session_not_found`` otherwise) unless ``check_references`` is off (a
    trigger delivery: its subscription's reference was checked when it was made; an agent tool:
    the calling session itself)."""
    if check_references:
        require_sessions(
            workspace=workspace, references=_session_references("body", wake_session_id, grant_session_ids)
        )
    proc = _new_process(
        workspace=workspace,
        definition=definition,
        input=input,
        disposition=disposition,
        process_id=process_id,
        kind=kind,
        provenance=provenance,
        wake_session_id=wake_session_id,
        parent_id=parent_id,
        now=timezone.now(),
        timeout_seconds=timeout_seconds,
    )
    try:
        # No look-up first: a second registration of the id fails the insert (then compared).
        with transaction.atomic():
            rows, drafts = process_events.prepare(proc, [_created_entry(proc)])
            proc.save(force_insert=True)  # with its event_seq: no second UPDATE for it
            for session_id in grant_session_ids:
                ProcessGrant.objects.create(process=proc, session_id=session_id)
            process_events.write(proc, rows, drafts)
            if disposition != Disposition.EXTERNALLY_OWNED:
                dispatch_drive([proc.id])
    except IntegrityError:
        existing = Process.objects.filter(pk=proc.pk).first()
        if existing is None:
            raise
        return _same_registration(existing, workspace, proc.registration_hash), False
    return proc, True


def process_start_many(
    *,
    workspace: Workspace,
    processes: list[ProcessStartSpec],
    provenance: dict[str, Any] | None = None,
) -> list[tuple[Process, bool]]:
    """Register many processes at once (fan-out): ``[(process, created)]`` in the order given.

    Each one is idempotent by id exactly like ``process_start`` (the same registration returns
    the existing row, created ``False``; an id given twice with the same registration is one
    process). All or nothing: if any id is registered differently, nothing is started and
    ``registration_conflict`` names the ids. The new ones are written in one transaction with a
    fixed number of statements (one read of the given ids, one insert each for the rows, their
    ``process.created`` log entries and grants, one stream publish), and their wake-ups leave
    after commit as one drive per claim batch."""
    now = timezone.now()
    built: list[Process] = []
    grants: dict[str, tuple[str, ...]] = {}
    references: dict[str, str] = {}
    for i, spec in enumerate(processes):
        references.update(_session_references(f"body.processes.{i}", spec.wake_session_id, spec.grant_session_ids))
    require_sessions(workspace=workspace, references=references)
    for i, spec in enumerate(processes):
        proc = _new_process(
            workspace=workspace,
            definition=spec.definition,
            input=spec.input,
            disposition=spec.disposition,
            process_id=spec.process_id,
            kind=spec.kind,
            provenance=provenance,
            wake_session_id=spec.wake_session_id,
            parent_id=None,
            now=now,
            path=f"body.processes.{i}",
            timeout_seconds=spec.timeout_seconds,
        )
        built.append(proc)
        grants.setdefault(proc.pk, tuple(spec.grant_session_ids))
    for _ in range(3):
        try:
            return _start_many(workspace, built, grants)
        except IntegrityError:
            continue  # an id was registered concurrently: read again and compare
    raise Conflict("process ids are being registered concurrently; retry", code="registration_contended")


def _start_many(
    workspace: Workspace, built: list[Process], grants: dict[str, tuple[str, ...]]
) -> list[tuple[Process, bool]]:
    unique: dict[str, Process] = {}
    conflicts: list[str] = []
    for proc in built:
        first = unique.setdefault(proc.pk, proc)
        if first.registration_hash != proc.registration_hash:
            conflicts.append(proc.pk)
    with transaction.atomic():
        existing = {p.pk: p for p in Process.objects.filter(pk__in=list(unique))}
        taken = [pk for pk, p in existing.items() if p.workspace_id != workspace.pk]
        if taken:
            raise Conflict("these process ids are not available", code="process_id_taken", details={"ids": taken})
        conflicts += [pk for pk, p in existing.items() if p.registration_hash != unique[pk].registration_hash]
        if conflicts:
            raise RegistrationConflict(
                f"{len(set(conflicts))} process id(s) exist with a different registration; nothing was started",
                details={"process_ids": sorted(set(conflicts))},
            )
        new = [p for pk, p in unique.items() if pk not in existing]
        rows: list[ProcessEvent] = []
        drafts = []
        for proc in new:
            proc.event_seq = 0
            new_rows, new_drafts = process_events.prepare(proc, [_created_entry(proc)])
            rows += new_rows
            drafts += new_drafts
        Process.objects.bulk_create(new, batch_size=1000)  # a concurrent registration of an id fails it: retried
        ProcessGrant.objects.bulk_create(
            [ProcessGrant(process=p, session_id=s) for p in new for s in dict.fromkeys(grants[p.pk])]
        )
        ProcessEvent.objects.bulk_create(rows)
        publish_many(workspace=workspace, drafts=drafts)
        runnable = [p.pk for p in new if p.disposition != Disposition.EXTERNALLY_OWNED]
        if runnable:
            dispatch_drive(runnable)
    created = {p.pk for p in new}
    seen: set[str] = set()
    result: list[tuple[Process, bool]] = []
    for proc in built:
        row = existing.get(proc.pk) or unique[proc.pk]
        result.append((row, proc.pk in created and proc.pk not in seen))
        seen.add(proc.pk)
    return result


def _same_registration(existing: Process, workspace: Workspace, registration: str) -> Process:
    if existing.workspace_id != workspace.pk:
        raise Conflict("this process id is not available", code="process_id_taken")
    if existing.registration_hash != registration:
        raise RegistrationConflict(
            f"process {existing.id!r} exists with a different registration",
            details={"process_id": existing.id, "registration_hash": existing.registration_hash},
        )
    return existing


# --- signal, cancel, abandon, re-drive --------------------------------------------------


def process_signal(
    *, workspace: Workspace, process_id: str, name: str, payload: Any = None, idempotency_key: str = ""
) -> ProcessEvent:
    """Queue a signal for a process (validated against its declaration). Signals are kept in
    order and consumed in order by ``wait_signal``; a parked waiter is woken. With an
    ``idempotency_key``, sending it again returns the signal already queued under that key."""
    current = Process.objects.filter(pk=process_id, workspace=workspace).first()
    if current is None:
        raise NotFound(f"no process {process_id!r}")
    if current.is_terminal and not idempotency_key:
        raise ProcessFinished(f"process {process_id!r} is {current.status}; it takes no signals")
    validate_signal(get_definition(current.definition_name), name, payload)
    with transaction.atomic():
        proc = _get_locked(workspace, process_id)
        if idempotency_key:
            sent = ProcessEvent.objects.filter(
                process=proc, type=f"{event_types.SIGNAL_PREFIX}{name}", data__key=idempotency_key
            ).first()
            if sent is not None:
                return sent
        if proc.is_terminal:
            raise ProcessFinished(f"process {process_id!r} is {proc.status}; it takes no signals")
        data = {"signal": name, "payload": payload} | ({"key": idempotency_key} if idempotency_key else {})
        [event] = process_events.append(proc, [(f"{event_types.SIGNAL_PREFIX}{name}", data)])
        if proc.wait_kind == WaitKind.SIGNAL and proc.wait_signal == name:
            Process.objects.filter(pk=proc.pk).update(
                wait_kind=WaitKind.NONE, wait_signal="", wait_until=None, runnable_since=timezone.now()
            )
            dispatch_drive([proc.pk])
    return event


def process_cancel(*, workspace: Workspace, process_id: str, cascade: bool = False, reason: str = "") -> Process:
    """Request cancellation. A parked or unclaimed process ends ``cancelled`` at once; a running
    one stops at its next step boundary. With ``cascade`` its non-terminal children follow."""
    with transaction.atomic():
        proc = _get_locked(workspace, process_id)
        if proc.is_terminal:
            raise ProcessFinished(f"process {process_id!r} is already {proc.status}")
        if proc.cancel_requested_at is None:
            proc.cancel_requested_at = timezone.now()
            proc.cancel_cascade = cascade
            proc.save(update_fields=["cancel_requested_at", "cancel_cascade", "updated_at"])
            process_events.append(
                proc, [(event_types.PROCESS_CANCEL_REQUESTED, {"cascade": cascade, "reason": reason})]
            )
        held = Lease.objects.filter(
            scope=LEASE_SCOPE, key=proc.pk, expires_at__gte=timezone.now(), holder__gt=""
        ).exists()
        if not held:
            # Fence out anyone who might still hold an old token, then end it now.
            Lease.objects.filter(scope=LEASE_SCOPE, key=proc.pk).update(holder="", token=F("token") + 1)
            terminate(proc, ProcessStatus.CANCELLED, error={"code": "cancelled", "reason": reason})
    if cascade:
        for child_id in Process.objects.filter(parent_id=process_id, status=ProcessStatus.RUNNING).values_list(
            "pk", flat=True
        ):
            try:
                process_cancel(workspace=workspace, process_id=child_id, cascade=True, reason=reason)
            except ProcessFinished:
                pass
    proc.refresh_from_db()
    return proc


def process_abandon_request(*, workspace: Workspace, process_id: str) -> Process:
    """Ask for a process to be abandoned. Nothing ends here: the sweep reconciles the request
    once no live lease holds the process (a live holder is never pre-empted)."""
    with transaction.atomic():
        proc = _get_locked(workspace, process_id)
        if proc.is_terminal:
            raise ProcessFinished(f"process {process_id!r} is already {proc.status}")
        if proc.abandon_requested_at is None:
            proc.abandon_requested_at = timezone.now()
            proc.save(update_fields=["abandon_requested_at", "updated_at"])
            process_events.append(proc, [(event_types.PROCESS_ABANDON_REQUESTED, {})])
    return proc


def process_redrive(*, workspace: Workspace, process_id: str) -> Process:
    """Wake a driver for this process now (harmless if it is not runnable)."""
    proc = Process.objects.filter(workspace=workspace, pk=process_id).first()
    if proc is None:
        raise NotFound(f"no process {process_id!r}")
    if proc.is_terminal:
        raise ProcessFinished(f"process {process_id!r} is already {proc.status}")
    with transaction.atomic():
        dispatch_drive([proc.pk])
    return proc


# --- completing externally owned processes ----------------------------------------------


def process_complete(
    *,
    workspace: Workspace,
    process_id: str,
    output: Any = None,
    error: dict[str, Any] | None = None,
    idempotency_key: str = "",
    via: str = "api",
    path: str = "body",
) -> tuple[Process, bool]:
    """End an externally owned process with its owner's result: ``completed`` with ``output``,
    or ``failed`` with ``error`` (``{"code", "message"?, "details"?}``). This is the engine's
    terminal write (``terminate``): the terminal event goes to the process log and the durable
    stream, and a parent waiting on the process is woken and driven.

    Returns ``(process, replayed)``. Idempotent: a completion repeated with the same result
    (under the same ``idempotency_key`` or none) answers the stored result with ``replayed``
    true; a different result is ``completion_conflict``. A process that is not externally
    owned is ``not_externally_owned``; one that ended otherwise is ``process_finished``; once
    its deadline has passed it fails with ``deadline_exceeded`` and the completion is refused
    with that code."""
    if output is not None and error is not None:
        message = "give either output (completes the process) or error (fails it), not both"
        raise InvalidInput(
            message,
            details=[{"path": f"{path}.output", "message": message}, {"path": f"{path}.error", "message": message}],
        )
    if error is not None:
        error = _completion_error(error, f"{path}.error")
    status = ProcessStatus.FAILED if error is not None else ProcessStatus.COMPLETED
    with transaction.atomic():
        proc = _get_locked(workspace, process_id)
        if proc.disposition != Disposition.EXTERNALLY_OWNED:
            raise NotExternallyOwned(
                f"process {process_id!r} is run by its definition (disposition {proc.disposition}); "
                "only an externally_owned process is completed from outside"
            )
        if proc.is_terminal:
            return _completion_replay(proc, status, output, error, idempotency_key), True
        if proc.wait_until is None or proc.wait_until > timezone.now():
            completion = {"key": idempotency_key, "via": via}
            terminate(proc, status, output=output, error=error, data={"completion": completion})
            return proc, False
        deadline = _expire(proc)
    # Committed: the deadline stands and this completion is refused.
    raise DeadlineExceeded(
        f"process {process_id!r} passed its deadline ({deadline}) and failed; a completion after it is refused",
        details={"deadline": deadline},
    )


def _completion_error(error: Any, path: str) -> dict[str, Any]:
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, str) or not 1 <= len(code) <= 100:
        message = "an error needs a code (1-100 characters)"
        raise InvalidInput(message, details=[{"path": f"{path}.code", "message": message}])
    return {"code": code, "message": str(error.get("message") or ""), "details": error.get("details")}


def _completion_replay(
    proc: Process, status: str, output: Any, error: dict[str, Any] | None, idempotency_key: str
) -> Process:
    """The answer to a completion of a process that has already ended."""
    ended = (
        ProcessEvent.objects.filter(process=proc, type=f"{event_types.PROCESS_TERMINAL_PREFIX}{proc.status}")
        .order_by("-seq")
        .first()
    )
    completion = ended.data.get("completion") if ended is not None else None
    if completion is None:
        if proc.error and proc.error.get("code") == "deadline_exceeded":
            raise DeadlineExceeded(
                f"process {proc.pk!r} passed its deadline ({proc.error.get('deadline')}) and failed; "
                "a completion after it is refused",
                details={"deadline": proc.error.get("deadline")},
            )
        raise ProcessFinished(f"process {proc.pk!r} is already {proc.status}; it takes no completion")
    if (proc.status, proc.output, proc.error) == (status, output, error):
        return proc
    if idempotency_key and completion.get("key") == idempotency_key:
        message = f"idempotency key {idempotency_key!r} was already used for process {proc.pk!r} with another result"
    else:
        message = f"process {proc.pk!r} was already {proc.status} by a completion with another result"
    raise CompletionConflict(message, details={"status": proc.status, "idempotency_key": completion.get("key", "")})


def _expire(proc: Process) -> str:
    """Fail a locked externally owned process whose deadline has passed; return the deadline."""
    deadline = proc.wait_until.isoformat() if proc.wait_until else ""
    error = {"code": "deadline_exceeded", "message": "no completion before the deadline", "deadline": deadline}
    terminate(proc, ProcessStatus.FAILED, error=error)
    return deadline


def _sweep_deadlines(now: Any, limit: int) -> int:
    due = Process.objects.filter(status=ProcessStatus.RUNNING, wait_kind=WaitKind.EXTERNAL, wait_until__lte=now)
    count = 0
    for pk in due.order_by("pk").values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            proc = lock_process(pk)
            if proc.is_terminal or proc.wait_until is None or proc.wait_until > timezone.now():
                continue  # completed (or cancelled) meanwhile
            _expire(proc)
            count += 1
    return count


# --- grants and session deletion --------------------------------------------------------


def process_grant(
    *, workspace: Workspace, process_id: str, session_id: str, check_references: bool = True
) -> ProcessGrant:
    """Let a session see and control a process (additive; re-granting revives a revoked grant).
    The session must belong to the workspace (404 ``session_not_found``) unless the caller
    vouches for it (``check_references=False``: the calling session itself)."""
    proc = Process.objects.filter(workspace=workspace, pk=process_id).first()
    if proc is None:
        raise NotFound(f"no process {process_id!r}")
    if check_references:
        require_sessions(workspace=workspace, references={"session_id": session_id})
    grant, created = ProcessGrant.objects.get_or_create(process=proc, session_id=session_id)
    if not created and grant.revoked_at is not None:
        grant.revoked_at = None
        grant.save(update_fields=["revoked_at"])
    return grant


def process_grant_revoke(*, workspace: Workspace, process_id: str, session_id: str) -> int:
    return ProcessGrant.objects.filter(
        process__workspace=workspace, process_id=process_id, session_id=session_id, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())


def process_session_deleted(*, workspace: Workspace, session_id: str) -> dict[str, Any]:
    """Called by ``sessions_app.services.session_delete``. Revokes the session's handle grants and
    its wake targets (processes and trigger subscriptions); never cancels anything. Reports the
    non-terminal processes the session had a handle on or was woken by: ``orphaned`` ones have
    no live grant left, ``preserved`` ones are still granted to another session."""
    now = timezone.now()
    with transaction.atomic():
        grants = ProcessGrant.objects.filter(
            process__workspace=workspace, session_id=session_id, revoked_at__isnull=True
        )
        affected = set(grants.values_list("process_id", flat=True))
        woken = Process.objects.filter(workspace=workspace, wake_session_id=session_id)
        affected |= set(woken.values_list("pk", flat=True))
        revoked = grants.update(revoked_at=now)
        woken.update(wake_session_id="")
        TriggerSubscription.objects.filter(workspace=workspace, wake_session_id=session_id).update(wake_session_id="")
        live_grant = ProcessGrant.objects.filter(process=OuterRef("pk"), revoked_at__isnull=True)
        rows = (
            Process.objects.filter(pk__in=affected, status=ProcessStatus.RUNNING)
            .annotate(granted=Exists(live_grant))
            .values_list("pk", "granted")
        )
        orphaned = sorted(pk for pk, granted in rows if not granted)
        preserved = sorted(pk for pk, granted in rows if granted)
        for pk in orphaned + preserved:
            proc = lock_process(pk)
            process_events.append(proc, [(event_types.PROCESS_HANDLE_REVOKED, {"session": session_id})])
    return {"revoked_handle_count": revoked, "orphaned_process_ids": orphaned, "preserved_process_ids": preserved}


# --- the sweep --------------------------------------------------------------------------


def process_sweep(*, limit: int = 1000) -> dict[str, int]:
    """Re-drive what is runnable and reconcile what is stuck; run by Celery beat in production
    and by the in-process scheduler by default. Idempotent.

    * started owner-bound rows whose lease lapsed with a provably gone holder: ``abandoned``;
    * externally owned rows past their deadline: ``failed`` (``deadline_exceeded``), which
      wakes a parent waiting on them;
    * abandon requests on rows no live lease holds: ``abandoned``;
    * child waits whose child already ended: made runnable;
    * runnable rows whose dispatch may have been lost (older than the re-dispatch grace),
      expired leases and due timers: a driver is dispatched for them;
    * due cron schedules: their occurrences are emitted.
    """
    from processes_app.triggers import schedules_tick

    now = timezone.now()
    abandoned = _sweep_abandon(now)
    expired = _sweep_deadlines(now, limit)
    ended_children = list(
        Process.objects.filter(status=ProcessStatus.RUNNING, wait_kind=WaitKind.CHILD)
        .filter(Exists(Process.objects.filter(pk=OuterRef("wait_child")).exclude(status=ProcessStatus.RUNNING)))
        .values_list("pk", flat=True)[:limit]
    )
    if ended_children:
        Process.objects.filter(pk__in=ended_children, wait_kind=WaitKind.CHILD).update(
            wait_kind=WaitKind.NONE, wait_child="", runnable_since=now
        )
    cut = now - timedelta(seconds=float(settings.LASHOPS_PROCESS_REDISPATCH_SECONDS))
    stale = Q(wait_kind=WaitKind.NONE, runnable_since__lte=cut) | Q(
        wait_kind__in=[WaitKind.TIMER, WaitKind.SIGNAL], wait_until__lte=now
    )
    ids = list(runnable_processes(now=now).filter(stale).order_by("pk").values_list("pk", flat=True)[:limit])
    ids = sorted(set(ids) | set(ended_children))
    batch = int(settings.LASHOPS_PROCESS_CLAIM_BATCH)
    for start in range(0, len(ids), batch):
        dispatch_drive(ids[start : start + batch])
    occurrences = schedules_tick(now=now)
    return {"dispatched": len(ids), "abandoned": abandoned, "expired": expired, "occurrences": occurrences}


def _sweep_abandon(now: Any) -> int:
    lapsed = Exists(Lease.objects.filter(scope=LEASE_SCOPE, key=OuterRef("pk"), expires_at__lt=now).exclude(holder=""))
    candidates = list(
        Process.objects.filter(status=ProcessStatus.RUNNING)
        .filter(
            (Q(disposition=Disposition.OWNER_BOUND, first_started_at__isnull=False) & lapsed)
            | (Q(abandon_requested_at__isnull=False) & ~live_lease_q(now))
        )
        .values_list("pk", flat=True)[:500]
    )
    count = 0
    for pk in candidates:
        with transaction.atomic():
            proc = lock_process(pk)
            if proc.is_terminal:
                continue
            lease = Lease.objects.select_for_update().filter(scope=LEASE_SCOPE, key=pk).first()
            now = timezone.now()
            live = lease is not None and lease.holder and lease.expires_at and lease.expires_at >= now
            if live:
                continue
            owner = lease.holder if lease is not None else ""
            if proc.abandon_requested_at is not None:
                writer = "reconciled_request"
            elif proc.disposition == Disposition.OWNER_BOUND and owner and holder_provably_gone(owner):
                writer = "sweep"
            else:
                continue  # a silent owner keeps its row running
            if lease is not None:
                Lease.objects.filter(pk=lease.pk).update(holder="", token=F("token") + 1)
            evidence = {"writer": writer, "owner": owner, "epoch_ms": int(now.timestamp() * 1000)}
            terminate(proc, ProcessStatus.ABANDONED, error={"code": "abandoned", **evidence}, evidence=evidence)
            count += 1
    return count


# --- retention --------------------------------------------------------------------------


def processes_prune(*, older_than_days: float | None = None, batch_size: int | None = None) -> int:
    """Delete terminal processes that finished before the retention window, with their event
    log, grants, lease and journal, in batches. Running processes are never touched.
    Returns the number of processes deleted."""
    days = settings.LASHOPS_PROCESS_RETENTION_DAYS if older_than_days is None else older_than_days
    size = batch_size or settings.LASHOPS_PROCESS_PRUNE_BATCH
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Process.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
                .order_by("pk")
                .values_list("pk", flat=True)[:size]
            )
            if not ids:
                return deleted
            ProcessEvent.objects.filter(process_id__in=ids).delete()
            ProcessGrant.objects.filter(process_id__in=ids).delete()
            Lease.objects.filter(scope=LEASE_SCOPE, key__in=ids).delete()
            Effect.objects.filter(scope__in=[f"process:{pk}" for pk in ids]).delete()
            Process.objects.filter(parent_id__in=ids).update(parent=None)
            _, per_model = Process.objects.filter(pk__in=ids, status__in=TERMINAL_STATUSES).delete()
            deleted += per_model.get("processes_app.Process", 0)
