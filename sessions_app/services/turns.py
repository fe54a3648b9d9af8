"""Writes for sessions: open, run/drive/commit turns, queued input, commands, cancel, delete,
child sessions, attachments.

A turn's life: ``turn_start`` admits it (claims the session's lane, and for a foreground turn
also the execution lease, in one transaction), ``turn_drive`` runs the engine under the lease,
and ``turn_commit`` lands everything in one transaction: nodes, head-revision compare-and-set,
usage, accepted inputs, the deferred final effect, the turn stamp, durable events, lease release.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from lashops.core.errors import Conflict, InvalidInput
from lashops.core.errors import LeaseHeld as CoreLeaseHeld
from lashops.core.errors import LeaseLost as CoreLeaseLost
from lashops.core.events import EventDraft, deferred, publish, publish_many
from lashops.core.models import Effect, Lease, Workspace
from lashops.core.runner import dispatch
from lashops.core.services import lease_acquire, lease_release
from lashops.runtime.interfaces import JournalError, LeaseLost
from lashops.runtime.nodes import NodeDraft
from lashops.runtime.providers import PROVIDERS, build_provider
from lashops.runtime.turn import TurnResult, run_turn
from lashops.runtime.types import ModelSpec, Usage
from sessions_app.errors import (
    CommitConflict,
    InvalidTurnInput,
    SessionBusy,
    SessionClosed,
    SessionConflict,
    SessionNotFound,
    TurnFinished,
)
from sessions_app.models import (
    Attachment,
    ModelPrice,
    Node,
    PendingInput,
    Session,
    SessionAttachment,
    SessionCommand,
    Turn,
    UsageRecord,
    session_id_validator,
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
from sessions_app.signals import turn_committed

log = logging.getLogger(__name__)

_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
)


def driver_id() -> str:
    """A unique holder id for one drive (host, pid, random), for leases and evidence."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _subject(session_id: str, **extra: Any) -> dict[str, Any]:
    return {"session": session_id, **extra}


# --- sessions ----------------------------------------------------------------------------


def default_model() -> dict[str, Any]:
    provider, _, model = settings.LASHOPS_DEFAULT_MODEL.partition(":")
    return {"provider": provider, "model": model or provider, "parameters": {}}


def _validate_model(model: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(model, dict) or not model.get("provider") or not model.get("model"):
        raise InvalidInput(
            "model needs a provider and a model", details=[{"path": "body.model", "message": "required"}]
        )
    if model["provider"] not in PROVIDERS:
        raise InvalidInput(
            f"unknown model provider {model['provider']!r}",
            details=[{"path": "body.model.provider", "message": f"one of {sorted(PROVIDERS)}"}],
        )
    return ModelSpec.from_dict(model).to_dict()


def session_open(
    *,
    workspace: Workspace,
    session_id: str | None = None,
    model: dict[str, Any] | None = None,
    system_prompt: str = "",
    prompt_layers: list[str] | None = None,
    parent: Session | None = None,
    mode: str = Session.Mode.STANDARD,
    metadata: dict[str, Any] | None = None,
) -> tuple[Session, bool]:
    """Open a session, idempotently by id. Returns ``(session, created)``. Re-opening an
    existing session with a model updates it (the host-supplied model wins, as in lash)."""
    session_id = session_id or f"s-{uuid.uuid4().hex[:20]}"
    try:
        session_id_validator(session_id)
    except Exception as exc:
        raise InvalidInput(f"invalid session id: {exc}", details=[{"path": "body.id", "message": str(exc)}]) from None
    if mode not in Session.Mode.values:
        raise InvalidInput(f"unknown mode {mode!r}", details=[{"path": "body.mode", "message": "one of standard"}])
    spec = _validate_model(model) if model is not None else None
    depth = parent.depth + 1 if parent is not None else 0
    with transaction.atomic():
        existing = Session.objects.select_for_update().filter(pk=session_id).first()
        if existing is not None:
            if existing.workspace_id != workspace.pk:
                raise SessionConflict("this session id is not available")
            changed = []
            if spec is not None and spec != existing.model:
                existing.model = spec
                changed.append("model")
            if existing.status == Session.Status.PARKED:
                existing.status = Session.Status.OPEN  # opening a parked session resumes it
                changed.append("status")
                publish(workspace=workspace, type="session.open", subject=_subject(existing.pk))
            if changed:
                existing.save(update_fields=[*changed, "updated_at"])
            return existing, False
        session = Session.objects.create(
            id=session_id,
            workspace=workspace,
            mode=mode,
            model=spec or default_model(),
            system_prompt=system_prompt,
            prompt_layers=list(prompt_layers or []),
            parent=parent,
            depth=depth,
            metadata=metadata or {},
        )
        publish(
            workspace=workspace,
            type="session.opened",
            subject=_subject(session.pk),
            data={"model": session.model, "parent": parent.pk if parent else None, "depth": depth},
        )
    trace_sink().trace({"type": "session_started", "session_id": session.pk})
    return session, True


def session_set_status(*, session: Session, status: str) -> Session:
    """Park or close a session (needs the lane free: no turn running)."""
    if status not in Session.Status.values:
        raise InvalidInput(f"unknown status {status!r}")
    with transaction.atomic():
        updated = Session.objects.filter(pk=session.pk, active_turn_id="").update(
            status=status, updated_at=timezone.now()
        )
        if not updated:
            raise SessionBusy("a turn is running on this session", details={"active_turn": session.active_turn_id})
        publish(workspace=session.workspace, type=f"session.{status}", subject=_subject(session.pk))
    session.refresh_from_db()
    return session


# --- turns: admission --------------------------------------------------------------------


def _check_input(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidTurnInput("input must be non-empty text", details=[{"path": "body.input", "message": "empty"}])
    if len(text) > settings.LASHOPS_MAX_INPUT_CHARS:
        raise InvalidTurnInput(
            f"input is {len(text)} characters; the limit is {settings.LASHOPS_MAX_INPUT_CHARS}",
            details=[{"path": "body.input", "message": "too long", "limit": settings.LASHOPS_MAX_INPUT_CHARS}],
        )


def _admit(
    session: Session,
    *,
    text: str,
    source_key: str,
    background: bool,
    accept_inputs: list[int] = (),
    running: bool = False,
) -> Turn:
    """Claim the session's lane and create the turn (in the caller's transaction), ``running``
    (started, first drive attempt) when the caller drives it at once. ``turn.session`` is the
    session as read after the claim: with the lane held, nobody else moves its head."""
    turn_id = uuid.uuid4().hex
    if not Session.objects.filter(pk=session.pk, active_turn_id="", status=Session.Status.OPEN).update(
        active_turn_id=turn_id
    ):
        current = Session.objects.filter(pk=session.pk).values_list("status", "active_turn_id").first()
        if current and current[0] != Session.Status.OPEN:
            raise SessionClosed(f"session is {current[0]}")
        raise SessionBusy(
            "a turn is already running on this session; post to /inputs to queue input",
            details={"active_turn": current[1] if current else None},
        )
    # One read for the fresh session row, its workspace and the last turn index.
    last_index = Turn.objects.filter(session=OuterRef("pk")).order_by("-index").values("index")[:1]
    fresh = Session.objects.select_related("workspace").annotate(last_index=Subquery(last_index)).get(pk=session.pk)
    index = (fresh.last_index or 0) + 1
    started = {"status": Turn.Status.RUNNING, "started_at": timezone.now(), "drive_attempts": 1} if running else {}
    turn = Turn.objects.create(
        id=turn_id,
        session=fresh,
        index=index,
        source_key=source_key,
        input_text=text,
        background=background,
        **started,
    )
    if accept_inputs:
        PendingInput.objects.filter(pk__in=accept_inputs).update(
            status=PendingInput.Status.ACCEPTED, accepted_by=turn.pk, claimed_by=turn.pk
        )
    publish(
        workspace=session.workspace,
        type="turn.started",
        subject=_subject(session.pk, turn=turn.pk),
        data={"turn_id": turn.pk, "index": index, "input": text, "background": background},
    )
    return turn


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
    return _drive(turn, holder=holder, token=grant.token, session=turn.session)


# --- turns: driving ----------------------------------------------------------------------


# A turn moves queued -> running -> committed and never back: every status write below is a
# conditional UPDATE over the turns that are still open (not stamped committed), checked by row count.
_OPEN = (Turn.Status.QUEUED, Turn.Status.RUNNING)


def _open_turns():
    """Turns not committed: open status and no commit stamp (the stamp is the truth)."""
    return Turn.objects.filter(status__in=_OPEN, commit_digest="")


def _settled(turn: Turn) -> Turn:
    """A turn with a commit stamp is committed: if a status write from before the guards moved
    it back to ``running``, put it back (conditionally; the stamp never goes away)."""
    if turn.commit_digest and turn.status != Turn.Status.COMMITTED:
        if Turn.objects.filter(pk=turn.pk).exclude(commit_digest="").update(status=Turn.Status.COMMITTED):
            log.warning("turn %s carried a commit stamp but said %s: settled as committed", turn.pk, turn.status)
        turn.status = Turn.Status.COMMITTED
    return turn


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
    turn.refresh_from_db()
    return _drive(turn, holder=holder, token=grant.token)


def _transcript(session: Session) -> list[dict[str, Any]]:
    """The settled transcript (sessions_app.selectors.transcript) in the engine's node shape."""
    from sessions_app.selectors import transcript

    return [node.as_runtime_dict() for node in transcript(session=session)]


def _drive(turn: Turn, *, holder: str, token: int, session: Session | None = None) -> Turn:
    """Run the engine and commit. ``session``: the row as read under the lane (admission), else read here."""
    if session is None:
        session = Session.objects.select_related("workspace").get(pk=turn.session_id)
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


# --- turns: commit -----------------------------------------------------------------------


def _cancelled_result(turn: Turn, result: TurnResult) -> TurnResult:
    """Cancel won the race with completion: keep the input, drop the model's work."""
    from dataclasses import replace

    kept = [n for n in result.nodes if n.kind == "user"]
    parent = kept[-1].id if kept else (result.nodes[0].parent_id if result.nodes else None)
    evidence = NodeDraft(
        id=f"{turn.pk}:{len(result.nodes)}",
        kind="system",
        parent_id=parent,
        caused_by=None,
        payload={"event": "turn.stopped", "stop_reason": "cancelled", "detail": "cancel requested before commit"},
    )
    return replace(
        result,
        outcome="stopped",
        stop_reason="cancelled",
        stop_detail="cancel requested before commit",
        final_text="",
        nodes=(*kept, evidence),
    )


_COST_QUANTUM = Decimal(1).scaleb(-Turn._meta.get_field("cost_usd").decimal_places)


def _prices() -> dict[tuple[str, str], ModelPrice]:
    return {(p.provider, p.model): p for p in ModelPrice.objects.all()}


def _cost(usage: dict[str, int], price: ModelPrice | None) -> Decimal:
    if price is None:
        return Decimal(0)
    mtok = Decimal(1_000_000)
    return (
        Decimal(usage.get("input_tokens", 0)) * price.input_per_mtok
        + Decimal(usage.get("output_tokens", 0)) * price.output_per_mtok
        + Decimal(usage.get("cache_read_input_tokens", 0)) * price.cache_read_per_mtok
        + Decimal(usage.get("cache_write_input_tokens", 0)) * price.cache_write_per_mtok
    ) / mtok


def turn_commit(
    *,
    turn: Turn,
    token: int,
    result: TurnResult,
    journal: OrmEffectJournal,
    events: list[EventDraft],
    expected_revision: int,
    inputs_claimed: bool = True,
) -> Turn:
    """Land a turn atomically. Retrying with the same result is idempotent; a different
    result for an already committed turn is a ``CommitConflict``; a stale lease is refused.
    ``inputs_claimed=False``: the driver knows the turn claimed no pending input (skip the read)."""
    session = turn.session
    # deferred(): the turn's events are written last (after the lease release), so the
    # workspace's other writers wait on its stream head only for this commit.
    with transaction.atomic(), deferred():
        # The session's last node seq comes with the lock: only this turn's commit (it holds the
        # lane) adds nodes to the session until it lands.
        last_seq = Node.objects.filter(session=OuterRef("session_id")).order_by("-seq").values("seq")[:1]
        locked = Turn.objects.select_for_update().annotate(last_seq=Subquery(last_seq)).get(pk=turn.pk)
        if locked.commit_digest:
            if locked.commit_digest != result.digest():
                raise CommitConflict("this turn was already committed with a different result")
            lease_release(scope=SESSION_LEASE_SCOPE, key=session.pk, token=token)  # if this retry holds it
            return _settled(locked)
        try:
            # Check and release in one statement: the row stays locked to the commit, and any
            # failure below rolls the release back with everything else.
            lease_release(scope=SESSION_LEASE_SCOPE, key=session.pk, token=token, check=True)
        except CoreLeaseLost:
            raise SessionBusy("the session lease was lost before commit") from None
        if locked.cancel_requested_at is not None and result.stop_reason != "cancelled":
            result = _cancelled_result(turn, result)
        digest = result.digest()
        journal.flush()

        prices = _prices()
        usage_rows = []
        turn_cost = Decimal(0)
        for call in result.llm_calls:
            u = Usage.from_dict(call.get("usage")).to_dict()
            cost = _cost(u, prices.get((call.get("provider", ""), call.get("model", ""))))
            turn_cost += cost
            usage_rows.append(
                UsageRecord(
                    session=session,
                    turn=locked,
                    source=call.get("source", "turn"),
                    provider=call.get("provider", ""),
                    model=call.get("model", ""),
                    step=call.get("step", 0),
                    attempt=call.get("attempt", 1),
                    cost_usd=cost,
                    **u,
                )
            )
        child = result.child_usage.to_dict()
        if any(child.values()):
            usage_rows.append(UsageRecord(session=session, turn=locked, source="child", **child))
        own = result.usage.to_dict()

        leaf = result.nodes[-1].id if result.nodes else session.leaf_node_id
        updated = Session.objects.filter(pk=session.pk, head_revision=expected_revision, active_turn_id=turn.pk).update(
            head_revision=F("head_revision") + 1,
            leaf_node_id=leaf,
            plugin_state=result.plugin_state,
            active_turn_id="",
            cost_usd=F("cost_usd") + turn_cost,
            child_input_tokens=F("child_input_tokens") + child["input_tokens"],
            child_output_tokens=F("child_output_tokens") + child["output_tokens"],
            updated_at=timezone.now(),
            **{name: F(name) + own[name] for name in _TOKEN_FIELDS},
        )
        if not updated:
            raise CommitConflict("the session head moved while this turn ran")

        base = locked.last_seq or 0
        Node.objects.bulk_create(
            [
                Node(
                    session=session,
                    turn=locked,
                    node_id=n.id,
                    seq=base + i + 1,
                    kind=n.kind,
                    parent_id=n.parent_id or "",
                    caused_by=n.caused_by or "",
                    payload=n.payload,
                )
                for i, n in enumerate(result.nodes)
            ]
        )
        UsageRecord.objects.bulk_create(usage_rows)
        # Claimed input the turn accepted is done; claimed but not accepted goes to the next turn, once.
        accepted = list(result.accepted_inputs)
        claimed = (
            list(
                PendingInput.objects.filter(
                    session=session, status=PendingInput.Status.CLAIMED, claimed_by=turn.pk
                ).order_by("id")
            )
            if inputs_claimed
            else []
        )
        for row in claimed:
            if row.text in accepted:
                accepted.remove(row.text)
                row.status, row.accepted_by = PendingInput.Status.ACCEPTED, turn.pk
            else:
                row.status, row.claimed_by = PendingInput.Status.PENDING, ""
        PendingInput.objects.bulk_update(claimed, ["status", "accepted_by", "claimed_by"])

        stamp = {
            "status": Turn.Status.COMMITTED,
            "outcome": result.outcome,
            "stop_reason": result.stop_reason or "",
            "stop_detail": result.stop_detail or "",
            "final_text": result.final_text,
            "steps": result.steps,
            "commit_digest": digest,
            "finished_at": timezone.now(),
            "cost_usd": turn_cost.quantize(_COST_QUANTUM),  # as the column stores it
            "child_input_tokens": child["input_tokens"],
            "child_output_tokens": child["output_tokens"],
            **own,
        }
        # Conditional like every status write: only an open turn is stamped (the row lock above
        # makes this hold on PostgreSQL; the row count makes it hold wherever the lock is a no-op).
        if not _open_turns().filter(pk=locked.pk).update(**stamp):
            raise CommitConflict("this turn was committed by another driver")
        for name, value in stamp.items():
            setattr(locked, name, value)  # no read-back: ``locked`` now is the committed row
        total = (result.usage + result.child_usage).to_dict()
        publish_many(
            workspace=session.workspace,
            drafts=[
                *events,
                EventDraft(
                    type="turn.committed",
                    subject=_subject(session.pk, turn=turn.pk),
                    data={
                        "turn_id": turn.pk,
                        "outcome": result.outcome,
                        "stop_reason": result.stop_reason,
                        "final_text": result.final_text,
                        "usage": own,
                        "total_usage": total,
                        "cost_usd": str(turn_cost),
                        "head_revision": expected_revision + 1,
                    },
                ),
            ],
        )
        revision = expected_revision + 1
        transaction.on_commit(lambda: _announce_commit(session.pk, turn.pk, revision))
        transaction.on_commit(lambda: _after_commit(session.pk))
    return locked


def _announce_commit(session_id: str, turn_id: str, head_revision: int) -> None:
    """Send ``turn_committed``; a failing receiver is logged, never raised into the turn."""
    sent = turn_committed.send_robust(sender=Turn, session_id=session_id, turn_id=turn_id, head_revision=head_revision)
    for receiver, outcome in sent:
        if isinstance(outcome, Exception):
            log.error("turn_committed receiver %r failed: %s", receiver, outcome, exc_info=outcome)


def _after_commit(session_id: str) -> None:
    """Drain what queued up while the turn ran: commands first, then deferred input. One read
    (the session with two EXISTS) answers the common case: nothing queued."""
    commands = SessionCommand.objects.filter(session=OuterRef("pk"), status=SessionCommand.Status.PENDING)
    inputs = PendingInput.objects.filter(session=OuterRef("pk"), status=PendingInput.Status.PENDING)
    session = (
        Session.objects.select_related("workspace")
        .annotate(commands_waiting=Exists(commands), input_waiting=Exists(inputs))
        .filter(pk=session_id)
        .first()
    )
    if session is None:
        return
    if session.commands_waiting:
        _apply_pending_commands(session)
    if session.input_waiting:
        _start_turn_for_pending_input(session)


# --- queued input ------------------------------------------------------------------------


def input_enqueue(*, session: Session, text: str, source_key: str) -> PendingInput:
    """Queue user input, idempotently by ``source_key``. A running turn takes it at its next step
    boundary, or it is deferred to the next turn exactly once; an idle session starts a
    background turn for it at once."""
    _check_input(text)
    if not source_key:
        raise InvalidInput("source_key is required", details=[{"path": "body.source_key", "message": "required"}])
    existing = PendingInput.objects.filter(session=session, source_key=source_key).first()
    if existing is not None:
        if existing.text != text:
            raise Conflict("this source_key was used with different input", code="idempotency_conflict")
        return existing
    try:
        with transaction.atomic():
            pending = PendingInput.objects.create(session=session, source_key=source_key, text=text)
            publish(
                workspace=session.workspace,
                type="input.queued",
                subject=_subject(session.pk),
                data={"source_key": source_key, "input_id": pending.pk},
            )
    except IntegrityError:
        return PendingInput.objects.get(session=session, source_key=source_key)
    _start_turn_for_pending_input(session)
    pending.refresh_from_db()
    return pending


def _start_turn_for_pending_input(session: Session) -> Turn | None:
    """If the session is idle and input is pending, start one background turn with all of it."""
    from sessions_app.tasks import drive_turn_task

    if not PendingInput.objects.filter(session=session, status=PendingInput.Status.PENDING).exists():
        return None
    try:
        with transaction.atomic():
            rows = list(
                PendingInput.objects.select_for_update()
                .filter(session=session, status=PendingInput.Status.PENDING)
                .order_by("id")
            )
            if not rows:
                return None
            text = "\n\n".join(r.text for r in rows)
            turn = _admit(session, text=text, source_key="", background=True, accept_inputs=[r.pk for r in rows])
            dispatch(drive_turn_task, turn_id=turn.pk)
            return turn
    except (SessionBusy, SessionClosed):
        return None  # the running turn takes it at a boundary, or its commit starts the next one


def input_cancel(*, session: Session, source_key: str) -> PendingInput:
    """Cancel pending input that no turn has accepted yet."""
    with transaction.atomic():
        row = PendingInput.objects.select_for_update().filter(session=session, source_key=source_key).first()
        if row is None:
            raise InvalidInput(f"no pending input {source_key!r}", code="not_found")
        if row.status == PendingInput.Status.CANCELLED:
            return row
        if row.status != PendingInput.Status.PENDING:
            raise Conflict(f"input {source_key!r} is already {row.status}", code="input_not_pending")
        row.status = PendingInput.Status.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        publish(
            workspace=session.workspace,
            type="input.cancelled",
            subject=_subject(session.pk),
            data={"source_key": source_key},
        )
    return row


# --- commands ----------------------------------------------------------------------------


def command_submit(*, session: Session, kind: str, source_key: str, reason: str = "") -> SessionCommand:
    """Submit ``refresh_tool_catalog`` or ``reset_session``, idempotently by source key. Applied at
    once when the session is idle, else before the next turn runs."""
    if kind not in SessionCommand.Kind.values:
        raise InvalidInput(
            f"unknown command {kind!r}",
            details=[{"path": "body.kind", "message": f"one of {SessionCommand.Kind.values}"}],
        )
    if not source_key:
        raise InvalidInput("source_key is required", details=[{"path": "body.source_key", "message": "required"}])
    command, created = SessionCommand.objects.get_or_create(
        session=session, source_key=f"command:{kind}:{source_key}", defaults={"kind": kind, "reason": reason}
    )
    if not created and command.kind != kind:
        raise Conflict("this source_key was used for another command", code="idempotency_conflict")
    _apply_pending_commands(session)
    command.refresh_from_db()
    return command


def _apply_pending_commands(session: Session) -> None:
    if not SessionCommand.objects.filter(session=session, status=SessionCommand.Status.PENDING).exists():
        return  # the common case: no write transaction at all
    with transaction.atomic():
        if not Session.objects.select_for_update().filter(pk=session.pk, active_turn_id="").exists():
            return
        for command in SessionCommand.objects.filter(session=session, status=SessionCommand.Status.PENDING).order_by(
            "id"
        ):
            if command.kind == SessionCommand.Kind.REFRESH_TOOL_CATALOG:
                Session.objects.filter(pk=session.pk).update(tool_catalog_generation=F("tool_catalog_generation") + 1)
            else:
                Session.objects.filter(pk=session.pk).update(
                    leaf_node_id="", plugin_state={}, head_revision=F("head_revision") + 1
                )
            command.status, command.applied_at = SessionCommand.Status.APPLIED, timezone.now()
            command.save(update_fields=["status", "applied_at"])
            publish(
                workspace=session.workspace,
                type="command.applied",
                subject=_subject(session.pk),
                data={"kind": command.kind, "source_key": command.source_key, "reason": command.reason},
            )
    session.refresh_from_db()


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
                type="turn.cancel_requested",
                subject=_subject(turn.session_id, turn=turn.pk),
                data={"turn_id": turn.pk},
            )
    return locked


# --- delete ------------------------------------------------------------------------------


def session_delete(*, session: Session) -> dict[str, Any]:
    """Delete a session and what it owns. Processes it started are never cancelled: their
    grants are revoked and they are reported as orphaned."""
    with transaction.atomic():
        locked = Session.objects.select_for_update().filter(pk=session.pk).first()
        if locked is None:
            raise SessionNotFound(f"no session {session.pk!r}")
        if locked.active_turn_id:
            raise SessionBusy(
                "cancel the running turn before deleting the session", details={"active_turn": locked.active_turn_id}
            )
        report: dict[str, Any] = {
            "session_id": session.pk,
            "turns": locked.turns.count(),
            "nodes": locked.nodes.count(),
            "pending_inputs": locked.pending_inputs.count(),
            "usage_records": locked.usage_records.count(),
            "attachments": locked.attachments.count(),
            "effects": Effect.objects.filter(scope__startswith=f"turn:{session.pk}:").delete()[0],
        }
        report["process"] = _process_report(session)
        Lease.objects.filter(scope=SESSION_LEASE_SCOPE, key=session.pk).delete()
        workspace = locked.workspace
        held = list(locked.attachments.values_list("attachment_id", flat=True))
        locked.delete()
        _release_unheld(held)
        publish(workspace=workspace, type="session.deleted", subject=_subject(session.pk), data=report)
    return report


def _process_report(session: Session) -> dict[str, Any] | None:
    try:
        from processes_app.services import process_session_deleted
    except ImportError:
        return None
    return process_session_deleted(workspace=session.workspace, session_id=session.pk)


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


# --- attachments -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAttachment:
    attachment: Attachment
    link: SessionAttachment


def attachment_put(*, session: Session, content: bytes, content_type: str, filename: str = "") -> StoredAttachment:
    """Store a blob by content hash (once, however many sessions hold it) and let ``session`` hold it."""
    digest = hashlib.sha256(content).hexdigest()
    with transaction.atomic():
        attachment = Attachment.objects.filter(pk=digest).first()
        if attachment is None:
            name = default_storage.save(f"attachments/{digest[:2]}/{digest}", ContentFile(content))
            attachment = Attachment.objects.create(
                sha256=digest,
                size=len(content),
                content_type=content_type or "application/octet-stream",
                storage_name=name,
            )
        link, _ = SessionAttachment.objects.get_or_create(
            session=session, attachment=attachment, defaults={"filename": filename}
        )
        publish(
            workspace=session.workspace,
            type="attachment.added",
            subject=_subject(session.pk),
            data={"sha256": digest, "size": attachment.size, "filename": filename},
        )
    return StoredAttachment(attachment=attachment, link=link)


def attachment_delete(*, session: Session, sha256: str) -> bool:
    """Drop the session's hold (idempotent); the blob goes when nobody holds it."""
    with transaction.atomic():
        deleted = SessionAttachment.objects.filter(session=session, attachment_id=sha256).delete()[0]
        _release_unheld([sha256])
    return bool(deleted)


def _release_unheld(digests: list[str]) -> None:
    """Drop the blobs among ``digests`` that nobody holds (rows now, files after commit)."""
    for attachment in Attachment.objects.filter(pk__in=digests, holders__isnull=True):
        name = attachment.storage_name
        attachment.delete()
        transaction.on_commit(lambda name=name: default_storage.delete(name))
