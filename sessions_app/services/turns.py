"""Turns: start, drive, cancel, child turns, and the sweep of stranded turns.

A turn's life: ``turn_start`` admits it (claims the session's lane, and for a foreground turn
also the execution lease, in one transaction), ``turn_drive`` runs the engine under the lease,
and ``turn_commit`` lands everything in one transaction: nodes, head-revision compare-and-set,
usage, accepted inputs, the deferred final effect, the turn stamp, durable events, lease release.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import Conflict
from lashops.core.errors import LeaseHeld as CoreLeaseHeld
from lashops.core.events import deferred, publish
from lashops.core.models import Lease, Workspace
from lashops.core.runner import dispatch
from lashops.core.services import lease_acquire
from lashops.runtime.interfaces import JournalError, LeaseLost
from lashops.runtime.providers import build_provider
from lashops.runtime.turn import run_turn
from lashops.runtime.types import Usage
from sessions_app.errors import (
    SessionBusy,
    TurnFinished,
)
from sessions_app.models import (
    Session,
    Turn,
)
from sessions_app.runtime_host import (
    SESSION_LEASE_SCOPE,
    OrmEffectJournal,
    TurnControl,
    TurnEventSink,
    session_plugins,
    tool_catalog,
    trace_sink,
    turn_config,
)
from sessions_app.services.admission import _admit, _check_input
from sessions_app.services.commit import turn_commit
from sessions_app.services.common import _OPEN, _TOKEN_FIELDS, _open_turns, _settled, _subject, driver_id
from sessions_app.services.sessions import session_open

log = logging.getLogger(__name__)


def turn_start(*, session: Session, text: str, source_key: str = "", background: bool = False) -> Turn:
    """Start a turn. Foreground: runs it now and returns it committed. Background: returns it
    queued; the runner drives it. Idempotent by ``source_key``. A running turn: 409 busy."""
    _check_input(text)
    if source_key:
        existing = Turn.objects.filter(session=session, source_key=source_key).first()
        if existing is not None:
            if existing.input_text != text:
                raise Conflict("this source_key was used with different input", code="idempotency_conflict")
            return existing
    # Pending commands were applied when submitted (idle lane) or by the previous turn's commit.
    holder = driver_id()
    try:
        # deferred(): turn.started is written after the lease and the turn row, at the end.
        with transaction.atomic(), deferred():
            # A foreground turn is created running: a held lease below rolls it all back.
            turn = _admit(session, text=text, source_key=source_key, background=background, running=not background)
            grant = None
            if background:
                from sessions_app.tasks import drive_turn_task

                dispatch(drive_turn_task, turn_id=turn.pk)
            else:
                grant = lease_acquire(
                    scope=SESSION_LEASE_SCOPE, key=session.pk, holder=holder, ttl=settings.LASHOPS_SESSION_LEASE_TTL
                )
    except IntegrityError:
        # A concurrent request with the same source_key won the race.
        existing = Turn.objects.filter(session=session, source_key=source_key).first()
        if existing is None:
            raise
        return existing
    except CoreLeaseHeld as exc:
        raise SessionBusy("another driver holds this session", details=exc.details) from None
    if background:
        return turn
    return _drive(turn, holder=holder, token=grant.token, session=turn.session)  # type: ignore[union-attr]  # foreground: granted


class _AlreadyCommitted(Exception):
    """Inside turn_drive's claim: the turn committed since it was read; roll the claim back."""


def turn_drive(*, turn_id: str, holder: str | None = None) -> Turn:
    """Drive (or re-drive) a turn to its commit under the session lease. Idempotent: a committed
    turn is returned as is, also by a driver that read it before another driver committed it;
    a busy session raises ``SessionBusy``."""
    turn = Turn.objects.select_related("session", "session__workspace").get(pk=turn_id)
    if turn.commit_digest:
        return _settled(turn)
    holder = holder or driver_id()
    try:
        with transaction.atomic():
            # The turn first, then the lease, in the order the commit locks them (on PostgreSQL a
            # claim racing a commit waits for it, then finds the turn stamped and matches nothing).
            claimed = (
                _open_turns()
                .filter(pk=turn.pk)
                .update(
                    status=Turn.Status.RUNNING,
                    started_at=Coalesce(F("started_at"), Value(timezone.now())),
                    drive_attempts=F("drive_attempts") + 1,
                )
            )
            if not claimed:
                raise _AlreadyCommitted
            grant = lease_acquire(
                scope=SESSION_LEASE_SCOPE, key=turn.session_id, holder=holder, ttl=settings.LASHOPS_SESSION_LEASE_TTL
            )
    except _AlreadyCommitted:
        turn.refresh_from_db()
        return _settled(turn)
    except CoreLeaseHeld as exc:
        raise SessionBusy("another driver holds this session", details=exc.details) from None
    # The session as read with the turn: it holds the lane for this turn, so nobody moved its
    # head since (only this turn's commit does, and then the claim above matched nothing).
    session = turn.session
    turn.refresh_from_db()
    return _drive(turn, holder=holder, token=grant.token, session=session)


def _transcript(session: Session) -> list[dict[str, Any]]:
    """The settled transcript (sessions_app.selectors.transcript) in the engine's node shape."""
    from sessions_app.selectors import transcript

    return [node.as_runtime_dict() for node in transcript(session=session)]


def _drive(turn: Turn, *, holder: str, token: int, session: Session) -> Turn:
    """Run the engine and commit. ``session``: the row (with its workspace) as read under the
    lane, by admission or with the turn; the only read of it in the turn."""
    turn.session = session
    first_drive = turn.drive_attempts == 1
    journal = OrmEffectJournal(workspace_id=session.workspace_id, scope=turn.scope, first_drive=first_drive)
    events = TurnEventSink(workspace=session.workspace, session_id=session.pk, turn_id=turn.pk)
    control = TurnControl(turn=turn, lease_key=session.pk, token=token)
    expected_revision = session.head_revision
    try:
        result = run_turn(
            turn_config(session, turn),
            user_input=turn.input_text,
            provider=build_provider(session.model["provider"]),
            journal=journal,
            transcript=_transcript(session),
            catalog=tool_catalog(session),
            plugins=session_plugins(session),
            plugin_state=session.plugin_state,
            events=events,
            control=control,
            trace=trace_sink(),
            # workspace_id: tools that act in the session's workspace (processes_app.agent_tools).
            host={"spawn_agent": _spawn_child_host(session.workspace), "workspace_id": session.workspace_id},
            parent_node_id=session.leaf_node_id or None,
        )
    except LeaseLost:
        log.warning("turn %s lost its lease before commit; the new holder will finish it", turn.pk)
        raise SessionBusy("the session lease was lost before commit") from None
    except JournalError:
        log.exception("turn %s could not journal an effect; leaving it for a re-drive", turn.pk)
        raise
    return turn_commit(
        turn=turn,
        token=token,
        result=result,
        journal=journal,
        events=events.durable,
        expected_revision=expected_revision,
        # A first drive that took no boundary input has no claimed rows to settle.
        inputs_claimed=control.claimed_any or not first_drive,
    )


# --- cancel ------------------------------------------------------------------------------


def turn_cancel(*, turn: Turn) -> Turn:
    """Request cancellation. The driver stops at its next check and commits stopped/cancelled
    with no partial text. If the turn committed first, that wins (409)."""
    with transaction.atomic():
        requested = (
            _open_turns()
            .filter(pk=turn.pk, cancel_requested_at__isnull=True)
            .update(cancel_requested_at=timezone.now())
        )
        locked = Turn.objects.select_for_update().get(pk=turn.pk)
        if locked.commit_digest:
            raise TurnFinished(f"turn {turn.pk} already committed ({locked.outcome})")
        if requested:
            publish(
                workspace=turn.session.workspace,
                type=event_types.TURN_CANCEL_REQUESTED,
                subject=_subject(turn.session_id, turn=turn.pk),
                data={"turn_id": turn.pk},
            )
    return locked


# --- child sessions ----------------------------------------------------------------------


def _spawn_child_host(workspace: Workspace):
    def spawn_agent(
        *,
        task: str,
        system_prompt: str | None,
        parent_session_id: str,
        parent_turn_id: str,
        call_id: str,
        idempotency_key: str,
        depth: int,
    ) -> dict[str, Any]:
        return child_turn_run(
            workspace=workspace,
            parent_session_id=parent_session_id,
            task=task,
            system_prompt=system_prompt,
            idempotency_key=idempotency_key,
        )

    return spawn_agent


def child_turn_run(
    *, workspace: Workspace, parent_session_id: str, task: str, system_prompt: str | None, idempotency_key: str
) -> dict[str, Any]:
    """Open (or find) the child session for this tool call and run its turn to the end.
    The idempotency key names the child, so a re-run after a crash finds the same one."""
    try:
        parent = Session.objects.get(pk=parent_session_id)
        child_id = f"{parent_session_id[:40]}.c{hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]}"
        child, _ = session_open(
            workspace=workspace,
            session_id=child_id,
            model=parent.model,
            system_prompt=system_prompt or "You are a focused sub-agent. Answer the task concisely.",
            parent=parent,
        )
        turn = turn_start(session=child, text=task, source_key=idempotency_key)
        if turn.status != Turn.Status.COMMITTED:
            turn = turn_drive(turn_id=turn.pk)
    except Exception as exc:  # the parent's model sees the failure as a tool error
        return {"final_text": f"sub-agent failed: {exc}", "usage": Usage(), "session_id": None, "is_error": True}
    # The child's total: its own usage plus what its own subagents reported, so a root turn
    # counts the whole tree (only input/output are kept for grandchildren).
    usage = Usage(**{name: getattr(turn, name) for name in _TOKEN_FIELDS}) + Usage(
        input_tokens=turn.child_input_tokens, output_tokens=turn.child_output_tokens
    )
    failed = turn.outcome != Turn.Outcome.FINISHED
    text = turn.final_text if not failed else f"sub-agent stopped: {turn.stop_reason} {turn.stop_detail}".strip()
    return {"final_text": text, "usage": usage, "session_id": child.pk, "is_error": failed}


# --- sweeping ----------------------------------------------------------------------------


def turns_sweep() -> list[str]:
    """Re-dispatch admitted turns whose driver is gone: not committed, lease free or expired,
    older than the grace period, and not already sent again by a sweep in the last
    ``LASHOPS_TURN_REDISPATCH_SECONDS`` (so a turn waiting behind busy workers is not handed a
    drive message every sweep). Turns with a commit stamp are settled, never re-driven.
    Returns the turn ids dispatched."""
    from datetime import timedelta

    from sessions_app.tasks import drive_turn_task

    now = timezone.now()
    settled = Turn.objects.filter(status__in=_OPEN).exclude(commit_digest="").update(status=Turn.Status.COMMITTED)
    if settled:
        log.warning("settled %d turns that carried a commit stamp but were not marked committed", settled)
    due = Q(dispatched_at__isnull=True) | Q(
        dispatched_at__lt=now - timedelta(seconds=settings.LASHOPS_TURN_REDISPATCH_SECONDS)
    )
    grace = now - timedelta(seconds=settings.LASHOPS_TURN_SWEEP_GRACE)
    stranded = _open_turns().filter(due, created_at__lt=grace).values_list("pk", "session_id")
    held = set(
        Lease.objects.filter(scope=SESSION_LEASE_SCOPE, expires_at__gte=now)
        .exclude(holder="")
        .values_list("key", flat=True)
    )
    dispatched = []
    for turn_id, session_id in stranded:
        if session_id in held:
            continue
        with transaction.atomic():
            # Claimed by row count: two sweeps at once (beat and a scheduler thread) send it once.
            if not _open_turns().filter(due, pk=turn_id).update(dispatched_at=now):
                continue
            dispatch(drive_turn_task, turn_id=turn_id)
        dispatched.append(turn_id)
    return dispatched
