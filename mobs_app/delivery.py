"""Delivering console frames to members, with retries.

A frame accepted at ingress (send, dispatch, peer message) is delivered in the background: the
identity is materialized if needed, then the text is queued as input of its session. One attempt
runs at a time: ``accepted -> dispatching`` is a claim, and the frame's ``frame_version`` at the
claim is the attempt's fencing token, so a late result of an attempt that was taken over is
dropped. The member answers once whatever happens, because the session's input is idempotent by
``source_key`` (``mob:<pk>:console:<seq>``, the same for every attempt).

* A transient failure (the session backend unavailable, capacity, a lease held, a materialization
  that failed or timed out) puts the frame back to ``accepted`` with ``next_attempt_at`` after an
  exponential backoff, and ``console.delivery_retry_scheduled``; after
  ``LASHOPS_CONSOLE_DELIVERY_ATTEMPTS`` attempts it ends ``delivery_failed`` with
  ``console.delivery_gave_up``.
* A permanent failure (the identity was deleted, retired or is retiring) ends ``delivery_failed``
  at once (``console.delivery_gave_up`` with ``permanent``).
* ``console_deliveries_sweep`` (beat, or the in-process scheduler) re-dispatches frames whose
  retry is due or whose dispatch was lost, and fails the attempt of a frame still
  ``dispatching`` past ``LASHOPS_CONSOLE_DELIVERY_TIMEOUT`` (the worker died or hung).
* ``console_frame_retry`` is the operator's "retry now" (admin action, API).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from lashops.core.errors import LashOpsError
from lashops.core.runner import dispatch
from mobs_app import hooks
from mobs_app.errors import Conflict, NotFound
from mobs_app.journal import FrameEvents, console_transition, parse_console_cursor
from mobs_app.members import member_sessions
from mobs_app.models import ConsoleFrame, Continuity, Identity, Mob
from mobs_app.services import identity_get, identity_materialize

log = logging.getLogger(__name__)

Status = ConsoleFrame.Status
DELIVERED_KINDS = ("send", "dispatch", "peer_message")
# Error codes that no retry can fix: the frame fails at once.
PERMANENT_CODES = frozenset({"unknown_identity", "identity_retired", "identity_retiring"})
SWEEP_BATCH = 200


def retry_delay(attempt: int) -> float:
    """Seconds between the failure of attempt ``attempt`` (1-based) and the next attempt."""
    base = settings.LASHOPS_CONSOLE_RETRY_BASE_SECONDS
    return min(base * 2 ** max(attempt - 1, 0), settings.LASHOPS_CONSOLE_RETRY_MAX_SECONDS)


def _timeout() -> timedelta:
    return timedelta(seconds=settings.LASHOPS_CONSOLE_DELIVERY_TIMEOUT)


def delivery_deadline(now: datetime | None = None) -> datetime:
    """When the sweep takes over a frame handed out now (its dispatch lost, or its worker dead)."""
    return (now or timezone.now()) + _timeout()


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")[:2000]


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, LashOpsError) and exc.code in PERMANENT_CODES


def _input_text(frame: ConsoleFrame) -> str:
    text = frame.payload.get("text", "")
    if frame.kind == "peer_message":
        sender = frame.payload.get("from", "")
        if frame.payload.get("from_mob"):
            sender = f"{sender}::{frame.payload['from_mob']}"
        return f"[message from peer {sender}] {text}"
    return text


def _start_attempt(row: ConsoleFrame) -> None:
    row.status = Status.DISPATCHING
    row.delivery_attempts += 1
    row.next_attempt_at = delivery_deadline()


def _deliver_once(frame: ConsoleFrame) -> str:
    """One attempt: materialize the identity if needed (coalesced), queue the text as input.
    A later attempt also retries a materialization that broke the identity on an earlier one."""
    mob = frame.mob
    identity = identity_get(mob=mob, key=frame.identity)
    if identity.state in (Identity.State.RETIRING, Identity.State.RETIRED):
        raise Conflict(f"identity {identity.key!r} is {identity.state}", code=f"identity_{identity.state}")
    if identity.state != Identity.State.ACTIVE:
        identity = identity_materialize(identity=identity, retry_broken=frame.delivery_attempts > 1)
    session_id = Continuity.objects.filter(pk=identity.pk).values_list("session_id", flat=True).get()
    member_sessions().deliver(
        workspace=mob.workspace,
        session_id=session_id,
        text=_input_text(frame),
        source_key=f"mob:{mob.pk}:{frame.cursor}",
    )
    return session_id


def frame_deliver(*, frame_pk: int, attempts: int | None = None) -> ConsoleFrame | None:
    """Run one delivery attempt of an accepted frame (see the module docstring). Idempotent: a
    frame that is not ``accepted`` is left alone, and so is one whose attempt count moved past
    ``attempts`` (a task dispatched for an attempt that another one already made)."""
    frame = ConsoleFrame.objects.select_related("mob__workspace", "mob__active_revision").filter(pk=frame_pk).first()
    if frame is None or (attempts is not None and frame.delivery_attempts != attempts):
        return None
    claimed = console_transition(frame=frame, change=_start_attempt, expect_status=Status.ACCEPTED)
    if claimed is None:
        return None
    token = claimed.frame_version
    try:
        session_id = _deliver_once(claimed)
    except Exception as exc:
        return attempt_failed(frame=claimed, token=token, reason=_reason(exc), permanent=is_permanent(exc))

    def delivered(row: ConsoleFrame) -> None:
        row.status = Status.DELIVERED
        row.session_id = session_id
        row.next_attempt_at = None

    done = console_transition(frame=claimed, change=delivered, expect_status=Status.DISPATCHING, expect_version=token)
    if done is None:
        log.warning("console %s of mob %s: a late attempt was fenced out", claimed.cursor, claimed.mob_id)
    return done


def attempt_failed(
    *, frame: ConsoleFrame, token: int, reason: str, permanent: bool, now: datetime | None = None
) -> ConsoleFrame | None:
    """Record the failure of the attempt holding ``token``: schedule the next attempt, or give
    up when the failure is permanent or the attempts are spent. None when fenced out."""
    now = now or timezone.now()
    limit = settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS
    gave_up = False

    def change(row: ConsoleFrame) -> FrameEvents:
        nonlocal gave_up
        row.last_error = reason
        attempt = row.delivery_attempts
        if permanent or attempt >= limit:
            gave_up = True
            row.status = Status.DELIVERY_FAILED
            row.next_attempt_at = None
            row.payload = {**row.payload, "error": reason}
            data = {"attempts": attempt, "max_attempts": limit, "permanent": permanent, "error": reason}
            return [("console.delivery_gave_up", data)]
        row.status = Status.ACCEPTED
        row.next_attempt_at = now + timedelta(seconds=retry_delay(attempt))
        data = {
            "attempt": attempt,
            "max_attempts": limit,
            "next_attempt_at": row.next_attempt_at.isoformat(),
            "error": reason,
        }
        return [("console.delivery_retry_scheduled", data)]

    updated = console_transition(frame=frame, change=change, expect_status=Status.DISPATCHING, expect_version=token)
    if updated is not None and gave_up:
        hooks.run("on_error", updated.mob, "delivery_failure", updated.identity, reason)
    return updated


def console_deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Fail the attempts that outlived ``LASHOPS_CONSOLE_DELIVERY_TIMEOUT`` (their worker died or
    hung), then re-dispatch the accepted frames whose time has come (a due retry, a lost dispatch).
    Each due frame is claimed by exactly one sweeper (``SKIP LOCKED`` on PostgreSQL, one writer at
    a time on SQLite) and its task goes out after the claim commits. Returns the counts."""
    now = now or timezone.now()
    stalled = list(
        ConsoleFrame.objects.filter(status=Status.DISPATCHING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", "frame_version", "delivery_attempts")[:SWEEP_BATCH]
    )
    timed_out = 0
    for pk, version, attempt in stalled:
        reason = (
            f"delivery attempt {attempt} did not finish within {settings.LASHOPS_CONSOLE_DELIVERY_TIMEOUT:g}s "
            "(its worker died or hung)"
        )
        if attempt_failed(frame=ConsoleFrame(pk=pk), token=version, reason=reason, permanent=False, now=now):
            timed_out += 1
    claimed = _claim_due(now)
    return {"timed_out": timed_out, "redispatched": len(claimed)}


def _claim_due(now: datetime) -> list[int]:
    from mobs_app.tasks import frame_deliver_task

    with transaction.atomic():
        rows = list(
            ConsoleFrame.objects.select_for_update(skip_locked=True)
            .filter(status=Status.ACCEPTED, next_attempt_at__lte=now)
            .order_by("pk")
            .values_list("pk", "delivery_attempts")[:SWEEP_BATCH]
        )
        if not rows:
            return []
        # Until the task claims the frame, the deadline is the lost-dispatch safety net.
        ConsoleFrame.objects.filter(pk__in=[pk for pk, _ in rows], status=Status.ACCEPTED).update(
            next_attempt_at=delivery_deadline(now)
        )
        for pk, attempts in rows:
            dispatch(frame_deliver_task, frame_pk=pk, attempts=attempts)
    return [pk for pk, _ in rows]


def console_frame_get(*, mob: Mob, cursor: str) -> ConsoleFrame:
    """The frame at ``console:<seq>`` (or ``<seq>``) of the mob: 404 ``unknown_frame`` if none."""
    seq = parse_console_cursor(cursor)
    frame = ConsoleFrame.objects.select_related("mob__workspace").filter(mob=mob, seq=seq).first()
    if frame is None:
        raise NotFound(f"mob {mob.mob_id!r} has no console frame console:{seq}", code="unknown_frame")
    return frame


def console_frame_retry(*, frame: ConsoleFrame) -> ConsoleFrame:
    """Operator's "retry now": deliver the frame at once. A frame that failed for good gets a fresh
    set of attempts; one waiting for its retry keeps its count. 409 ``not_retriable`` for frames
    that are not delivered to a member or already were, ``delivery_in_progress`` while an attempt
    runs, ``identity_<state>``/``identity_deleted`` when no retry could succeed."""
    if frame.kind not in DELIVERED_KINDS:
        raise Conflict(
            f"console frame {frame.cursor} is a {frame.kind!r} frame: only {', '.join(DELIVERED_KINDS)} are delivered",
            code="not_retriable",
        )
    _refuse_unless_retriable(frame.status, frame.cursor)
    state = Identity.objects.filter(mob_id=frame.mob_id, key=frame.identity).values_list("state", flat=True).first()
    if state is None:
        raise Conflict(f"identity {frame.identity!r} was deleted", code="identity_deleted")
    if state in (Identity.State.RETIRING, Identity.State.RETIRED):
        raise Conflict(f"identity {frame.identity!r} is {state}", code=f"identity_{state}")
    from mobs_app.tasks import frame_deliver_task

    def change(row: ConsoleFrame) -> FrameEvents:
        data = {"previous_status": row.status, "previous_attempts": row.delivery_attempts}
        if row.status == Status.DELIVERY_FAILED:
            row.delivery_attempts = 0
            row.payload = {k: v for k, v in row.payload.items() if k != "error"}
        row.status = Status.ACCEPTED
        row.next_attempt_at = delivery_deadline()
        return [("console.delivery_retry_requested", data)]

    with transaction.atomic():
        updated = console_transition(
            frame=frame, change=change, expect_status=(Status.ACCEPTED, Status.DELIVERY_FAILED)
        )
        if updated is None:
            current = ConsoleFrame.objects.filter(pk=frame.pk).values_list("status", flat=True).first()
            _refuse_unless_retriable(current or "deleted", frame.cursor)
            raise Conflict(f"console frame {frame.cursor} changed meanwhile; try again", code="frame_changed")
        dispatch(frame_deliver_task, frame_pk=updated.pk, attempts=updated.delivery_attempts)
    return updated


def _refuse_unless_retriable(status: str, cursor: str) -> None:
    if status == Status.DISPATCHING:
        raise Conflict(f"console frame {cursor} is being delivered right now", code="delivery_in_progress")
    if status not in (Status.ACCEPTED, Status.DELIVERY_FAILED):
        raise Conflict(
            f"console frame {cursor} is {status}: only accepted and delivery_failed frames can be retried",
            code="not_retriable",
            details={"status": status},
        )
