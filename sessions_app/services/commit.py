"""Turn commit: everything a turn did lands in one transaction, as named steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import F, OuterRef, Subquery, Value
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import LeaseLost as CoreLeaseLost
from lashops.core.events import EventDraft, deferred, publish_many
from lashops.core.services import lease_release
from lashops.runtime.nodes import NodeDraft
from lashops.runtime.turn import TurnResult
from lashops.runtime.types import Usage
from sessions_app.errors import (
    CommitConflict,
    SessionBusy,
)
from sessions_app.models import (
    ModelPrice,
    Node,
    PendingInput,
    Session,
    SessionCommand,
    Turn,
    UsageRecord,
)
from sessions_app.runtime_host import (
    SESSION_LEASE_SCOPE,
    OrmEffectJournal,
)
from sessions_app.services.common import _TOKEN_FIELDS, _open_turns, _settled, _subject
from sessions_app.services.inputs import _apply_pending_commands, _start_turn_for_pending_input
from sessions_app.signals import CommittedTurn, member_mob, turn_committed

log = logging.getLogger(__name__)

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


@dataclass
class _Usage:
    """What a turn's LLM calls cost: the rows to insert, and the sums the session and turn keep."""

    rows: list[UsageRecord]
    cost: Decimal
    own: dict[str, int]  # the turn's own tokens
    child: dict[str, int]  # what its subagents reported


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
        locked = _lock_turn(turn)
        if locked.commit_digest:
            return _commit_again(locked, session=session, token=token, result=result)
        _release_lease(session, token=token)
        if locked.cancel_requested_at is not None and result.stop_reason != "cancelled":
            result = _cancelled_result(turn, result)
        digest = result.digest()
        journal.flush()
        usage = _usage(session, locked, result)
        _advance_head(session, turn, result=result, usage=usage, expected_revision=expected_revision)
        _insert_nodes(session, locked, result)
        UsageRecord.objects.bulk_create(usage.rows)
        if inputs_claimed:
            _settle_claimed_inputs(session, turn, result)
        _stamp(locked, result=result, digest=digest, usage=usage)
        _publish_committed(session, turn, result=result, events=events, usage=usage, revision=expected_revision + 1)
        committed = _committed_turn(session, locked, revision=expected_revision + 1)
        transaction.on_commit(lambda: _announce_commit(committed))
        transaction.on_commit(lambda: _after_commit(session))
    return locked


def _lock_turn(turn: Turn) -> Turn:
    """Lock the turn row. The session's last node seq comes with the lock: only this turn's
    commit (it holds the lane) adds nodes to the session until it lands."""
    last_seq = Node.objects.filter(session=OuterRef("session_id")).order_by("-seq").values("seq")[:1]
    return Turn.objects.select_for_update().annotate(last_seq=Subquery(last_seq)).get(pk=turn.pk)


def _commit_again(locked: Turn, *, session: Session, token: int, result: TurnResult) -> Turn:
    """A retry of a commit that landed: the same result is a no-op, a different one a conflict."""
    if locked.commit_digest != result.digest():
        raise CommitConflict("this turn was already committed with a different result")
    lease_release(scope=SESSION_LEASE_SCOPE, key=session.pk, token=token)  # if this retry holds it
    return _settled(locked)


def _release_lease(session: Session, *, token: int) -> None:
    """Check and release in one statement: the row stays locked to the commit, and any failure
    later in the commit rolls the release back with everything else."""
    try:
        lease_release(scope=SESSION_LEASE_SCOPE, key=session.pk, token=token, check=True)
    except CoreLeaseLost:
        raise SessionBusy("the session lease was lost before commit") from None


def _usage(session: Session, locked: Turn, result: TurnResult) -> _Usage:
    """One usage row per LLM call (priced), plus one for what subagents reported."""
    prices = _prices()
    rows = []
    total = Decimal(0)
    for call in result.llm_calls:
        u = Usage.from_dict(call.get("usage")).to_dict()
        cost = _cost(u, prices.get((call.get("provider", ""), call.get("model", ""))))
        total += cost
        rows.append(
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
        rows.append(UsageRecord(session=session, turn=locked, source="child", **child))
    return _Usage(rows=rows, cost=total, own=result.usage.to_dict(), child=child)


def _advance_head(session: Session, turn: Turn, *, result: TurnResult, usage: _Usage, expected_revision: int) -> None:
    """Compare-and-set the session head and free its lane, with the turn's sums."""
    leaf = result.nodes[-1].id if result.nodes else session.leaf_node_id
    updated = Session.objects.filter(pk=session.pk, head_revision=expected_revision, active_turn_id=turn.pk).update(
        head_revision=F("head_revision") + 1,
        leaf_node_id=leaf,
        plugin_state=result.plugin_state,
        active_turn_id="",
        cost_usd=F("cost_usd") + usage.cost,
        child_input_tokens=F("child_input_tokens") + usage.child["input_tokens"],
        child_output_tokens=F("child_output_tokens") + usage.child["output_tokens"],
        updated_at=timezone.now(),
        **{name: F(name) + usage.own[name] for name in _TOKEN_FIELDS},
    )
    if not updated:
        raise CommitConflict("the session head moved while this turn ran")


def _insert_nodes(session: Session, locked: Turn, result: TurnResult) -> None:
    base = locked.last_seq or 0  # type: ignore[attr-defined]  # annotated by the locking query
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


def _settle_claimed_inputs(session: Session, turn: Turn, result: TurnResult) -> None:
    """Claimed input the turn accepted is done; claimed but not accepted goes to the next turn, once."""
    accepted = list(result.accepted_inputs)
    claimed = list(
        PendingInput.objects.filter(session=session, status=PendingInput.Status.CLAIMED, claimed_by=turn.pk).order_by(
            "id"
        )
    )
    for row in claimed:
        if row.text in accepted:
            accepted.remove(row.text)
            row.status, row.accepted_by = PendingInput.Status.ACCEPTED, turn.pk
        else:
            row.status, row.claimed_by = PendingInput.Status.PENDING, ""
    PendingInput.objects.bulk_update(claimed, ["status", "accepted_by", "claimed_by"])


def _stamp(locked: Turn, *, result: TurnResult, digest: str, usage: _Usage) -> None:
    """Stamp the turn committed. Conditional like every status write: only an open turn is
    stamped (the row lock makes this hold on PostgreSQL; the row count wherever it is a no-op)."""
    stamp = {
        "status": Turn.Status.COMMITTED,
        "outcome": result.outcome,
        "stop_reason": result.stop_reason or "",
        "stop_detail": result.stop_detail or "",
        "final_text": result.final_text,
        "steps": result.steps,
        "commit_digest": digest,
        "finished_at": timezone.now(),
        "cost_usd": usage.cost.quantize(_COST_QUANTUM),  # as the column stores it
        "child_input_tokens": usage.child["input_tokens"],
        "child_output_tokens": usage.child["output_tokens"],
        **usage.own,
    }
    if not _open_turns().filter(pk=locked.pk).update(**stamp):
        raise CommitConflict("this turn was committed by another driver")
    for name, value in stamp.items():
        setattr(locked, name, value)  # no read-back: ``locked`` now is the committed row


def _publish_committed(
    session: Session, turn: Turn, *, result: TurnResult, events: list[EventDraft], usage: _Usage, revision: int
) -> None:
    """The turn's durable events, then ``turn.committed`` (written last: see ``deferred``)."""
    total = (result.usage + result.child_usage).to_dict()
    publish_many(
        workspace=session.workspace,
        drafts=[
            *events,
            EventDraft(
                type=event_types.TURN_COMMITTED,
                subject=_subject(session.pk, turn=turn.pk),
                data={
                    "turn_id": turn.pk,
                    "outcome": result.outcome,
                    "stop_reason": result.stop_reason,
                    "final_text": result.final_text,
                    "usage": usage.own,
                    "total_usage": total,
                    "cost_usd": str(usage.cost),
                    "head_revision": revision,
                },
            ),
        ],
    )


def _committed_turn(session: Session, locked: Turn, *, revision: int) -> CommittedTurn:
    """What ``turn_committed`` hands its receivers. The accepted inputs' keys are read (one
    statement, in the commit's transaction) only for a mob member's turn: nobody else reads them."""
    mob = member_mob(session.metadata)
    accepted = (
        PendingInput.objects.filter(session=session, accepted_by=locked.pk)
        .order_by("id")
        .values_list("source_key", flat=True)
        if mob
        else ()
    )
    return CommittedTurn(
        session_id=session.pk,
        turn_id=locked.pk,
        head_revision=revision,
        final_text=locked.final_text,
        source_key=locked.source_key,
        accepted_inputs=tuple(accepted),
        mob=mob,
    )


def _announce_commit(committed: CommittedTurn) -> None:
    """Send ``turn_committed``; a failing receiver is logged, never raised into the turn."""
    for receiver, outcome in turn_committed.send_robust(sender=Turn, turn=committed):
        if isinstance(outcome, Exception):
            log.error("turn_committed receiver %r failed: %s", receiver, outcome, exc_info=outcome)


def _after_commit(session: Session) -> None:
    """Drain what queued up while the turn ran: commands first, then deferred input. One read
    answers the common case (nothing queued), and it does not read the session row again: the
    turn's own copy (its workspace loaded) is enough for both drains."""
    commands = SessionCommand.objects.filter(session_id=session.pk, status=SessionCommand.Status.PENDING)
    inputs = PendingInput.objects.filter(session_id=session.pk, status=PendingInput.Status.PENDING)
    # UNION (not ALL): at most one row per kind; no ORDER BY (SQLite refuses it in a compound).
    kinds = commands.order_by().values_list(Value("commands")).union(inputs.order_by().values_list(Value("input")))
    waiting = {kind for (kind,) in kinds}
    if "commands" in waiting:
        _apply_pending_commands(session)
    if "input" in waiting:
        _start_turn_for_pending_input(session)
