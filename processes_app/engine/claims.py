"""Claims: take runnable processes under a lease (one batch per transaction), the lease
keeper that renews what this OS process holds, holder ids, and the engine's retry of a write
when the database cannot be reached."""

from __future__ import annotations

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

from lashops.core import event_types
from lashops.core.errors import LeaseLost
from lashops.core.events import EventDraft, deferred, publish_many
from lashops.core.models import Workspace
from lashops.core.services import lease_acquire_many, lease_release, lease_renew
from processes_app import events as process_events
from processes_app.context import Journal, load_journals
from processes_app.definitions import get_definition
from processes_app.errors import DatabaseUnavailable
from processes_app.models import Disposition, Process, ProcessEvent, WaitKind
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
            entry: tuple[str, dict[str, Any]] = (event_types.PROCESS_STARTED, {"holder": claim.holder})
        else:
            entry = (event_types.PROCESS_RESUMED, {"holder": claim.holder, "run": proc.run_count + 1})
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


def _release_quietly(claims: list[Claim]) -> None:
    """Hand back leases the drive will not use; if the database is still away they lapse."""
    for claim in claims:
        _keeper.remove(claim)
        try:
            lease_release(scope=LEASE_SCOPE, key=claim.process_id, token=claim.token)
        except DATABASE_ERRORS:
            connection.close()
            return
