"""The mob's two durable timelines: the structural ledger (``MobEvent``, cursor ``seq``) and the
console log (``ConsoleFrame``, cursor ``console:<seq>``). Both are written in the caller's
transaction and mirrored on the workspace event stream (subject ``{"mob": pk}``)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from lashops.core import event_types
from lashops.core.events import EventDraft, publish_many
from mobs_app.errors import CursorAhead, InvalidInput, ReplayUnavailable
from mobs_app.models import ConsoleFrame, Mob, MobEvent, MobMetadata


def _next(mob: Mob, field: str, count: int = 1) -> int:
    """Allocate ``count`` numbers of a per-mob counter inside the caller's transaction (the row
    lock orders concurrent writers on PostgreSQL). Returns the last one."""
    Mob.objects.filter(pk=mob.pk).update(**{field: F(field) + count})
    return Mob.objects.filter(pk=mob.pk).values_list(field, flat=True).get()


def _event_type(kind: str) -> str:
    if kind.startswith("member_"):
        return f"identity.{kind.removeprefix('member_')}"
    return f"mob.{kind}"


def ledger_append_many(*, mob: Mob, entries: list[tuple[str, str, dict[str, Any]]]) -> list[MobEvent]:
    """Append (kind, identity, data) entries to the ledger and the event stream, atomically."""
    if not entries:
        return []
    with transaction.atomic():
        last = _next(mob, "ledger_seq", len(entries))
        first = last - len(entries) + 1
        rows = MobEvent.objects.bulk_create(
            [
                MobEvent(mob=mob, seq=first + i, kind=kind, identity=identity, data=data)
                for i, (kind, identity, data) in enumerate(entries)
            ]
        )
        publish_many(
            workspace=mob.workspace,
            drafts=[
                EventDraft(
                    type=_event_type(row.kind),
                    subject={
                        "mob": mob.pk,
                        "mob_id": mob.mob_id,
                        **({"identity": row.identity} if row.identity else {}),
                    },
                    data={"seq": row.seq, **row.data},
                )
                for row in rows
            ],
        )
    return rows


def ledger_append(*, mob: Mob, kind: str, identity: str = "", data: dict[str, Any] | None = None) -> MobEvent:
    return ledger_append_many(mob=mob, entries=[(kind, identity, data or {})])[0]


def ledger_after(*, mob: Mob, after_seq: int, limit: int) -> tuple[list[MobEvent], int]:
    """Ledger events after ``after_seq`` and the latest seq. A cursor past the end is an error."""
    if after_seq < 0 or not 1 <= limit <= 1000:
        raise InvalidInput("after_seq must be >= 0 and limit between 1 and 1000")
    latest = Mob.objects.filter(pk=mob.pk).values_list("ledger_seq", flat=True).get()
    if after_seq > latest:
        raise CursorAhead(
            f"after_seq {after_seq} is past the end of the ledger ({latest})", details={"latest_seq": latest}
        )
    rows = list(MobEvent.objects.filter(mob=mob, seq__gt=after_seq).order_by("seq")[:limit])
    return rows, latest


# --- projector ------------------------------------------------------------------------------


def projector_cursor(*, mob: Mob, name: str) -> int:
    row = MobMetadata.objects.filter(mob=mob, key=f"subscription_cursor:{name}").values_list("value", flat=True)
    value = row.first()
    return int(value["seq"]) if value else 0


def projector_run(*, mob: Mob, name: str, handler: Any, limit: int | None = None, batch: int = 100) -> int:
    """Feed ledger events after the stored subscription cursor to ``handler(event)``, storing the
    cursor after each one: a projector killed mid-stream resumes where it stopped and skips
    nothing (the event in flight when it died is seen again: at-least-once). Returns the count."""
    done = 0
    while limit is None or done < limit:
        after = projector_cursor(mob=mob, name=name)
        latest = Mob.objects.filter(pk=mob.pk).values_list("ledger_seq", flat=True).get()
        if after > latest:
            raise CursorAhead(f"projector {name!r} cursor {after} is past the ledger's end ({latest})")
        rows = list(MobEvent.objects.filter(mob=mob, seq__gt=after).order_by("seq")[:batch])
        if not rows:
            return done
        for event in rows:
            handler(event)
            MobMetadata.objects.update_or_create(
                mob=mob, key=f"subscription_cursor:{name}", defaults={"value": {"seq": event.seq}}
            )
            done += 1
            if limit is not None and done >= limit:
                break
    return done


# --- console log ----------------------------------------------------------------------------


def _frame_dict(frame: ConsoleFrame) -> dict[str, Any]:
    return {
        "cursor": frame.cursor,
        "identity": frame.identity,
        "session_id": frame.session_id,
        "kind": frame.kind,
        "status": frame.status,
        "frame_version": frame.frame_version,
        "source_kind": frame.source_kind,
        "payload": frame.payload,
        "delivery_attempts": frame.delivery_attempts,
        "next_attempt_at": frame.next_attempt_at.isoformat() if frame.next_attempt_at else None,
        "last_error": frame.last_error,
    }


def console_append(
    *,
    mob: Mob,
    kind: str,
    identity: str = "",
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    status: str = ConsoleFrame.Status.ACCEPTED,
    source_kind: str = "send",
    session_id: str = "",
    next_attempt_at: datetime | None = None,
) -> tuple[ConsoleFrame, bool]:
    """Append a frame unless one with ``dedupe_key`` exists (append-if-absent). Returns
    (frame, created). ``next_attempt_at`` hands a frame to be delivered to the delivery sweep."""
    if dedupe_key:
        existing = ConsoleFrame.objects.filter(mob=mob, dedupe_key=dedupe_key).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            frame = ConsoleFrame.objects.create(
                mob=mob,
                seq=_next(mob, "console_seq"),
                dedupe_key=dedupe_key,
                identity=identity,
                session_id=session_id,
                kind=kind,
                status=status,
                source_kind=source_kind,
                payload=payload or {},
                next_attempt_at=next_attempt_at,
            )
            publish_many(
                workspace=mob.workspace,
                drafts=[
                    EventDraft(
                        type=event_types.CONSOLE_FRAME,
                        subject={"mob": mob.pk, "mob_id": mob.mob_id, "identity": identity},
                        data=_frame_dict(frame),
                    )
                ],
            )
        return frame, True
    except IntegrityError:
        if dedupe_key:
            existing = ConsoleFrame.objects.filter(mob=mob, dedupe_key=dedupe_key).first()
            if existing is not None:
                return existing, False
        raise


FrameEvents = list[tuple[str, dict[str, Any]]]


def console_transition(
    *,
    frame: ConsoleFrame,
    change: Callable[[ConsoleFrame], FrameEvents | None],
    expect_status: str | Collection[str] | None = None,
    expect_version: int | None = None,
) -> ConsoleFrame | None:
    """Apply ``change`` to the locked frame, bump ``frame_version`` and publish
    ``console.frame_updated`` and the ``(type, data)`` events ``change`` returns, in one
    transaction. It is a claim: None when the frame is gone, is no longer in ``expect_status``
    or another writer moved its ``frame_version`` past ``expect_version`` (a fencing token)."""
    statuses = (expect_status,) if isinstance(expect_status, str) else expect_status
    with transaction.atomic():
        # of=("self",): lock the frame only. A plain FOR UPDATE over the join also locked the mob and
        # the workspace row, and any commit inserting an Event checks its workspace foreign key with
        # FOR KEY SHARE while holding the stream head: a deadlock on PostgreSQL.
        frame = (  # None is handled below
            ConsoleFrame.objects.select_for_update(of=("self",))  # type: ignore[assignment]
            .select_related("mob__workspace")
            .filter(pk=frame.pk)
            .first()
        )
        if frame is None:
            return None
        if statuses is not None and frame.status not in statuses:
            return None
        if expect_version is not None and frame.frame_version != expect_version:
            return None
        extra = change(frame) or []
        frame.frame_version += 1
        frame.save(
            update_fields=[
                "status",
                "frame_version",
                "payload",
                "session_id",
                "delivery_attempts",
                "next_attempt_at",
                "last_error",
                "updated_at",
            ]
        )
        mob = frame.mob
        subject = {"mob": mob.pk, "mob_id": mob.mob_id, "identity": frame.identity}
        publish_many(
            workspace=mob.workspace,
            drafts=[EventDraft(type=event_types.CONSOLE_FRAME_UPDATED, subject=subject, data=_frame_dict(frame))]
            + [EventDraft(type=kind, subject=subject, data={"cursor": frame.cursor, **data}) for kind, data in extra],
        )
    return frame


def console_update(
    *,
    frame: ConsoleFrame,
    status: str,
    payload: dict[str, Any] | None = None,
    session_id: str | None = None,
    expect_status: str | None = None,
) -> ConsoleFrame | None:
    """Change a frame's status (and merge ``payload``); bumps ``frame_version``. With
    ``expect_status`` it is a claim: None when the frame is no longer in that status."""

    def change(row: ConsoleFrame) -> None:
        row.status = status
        if payload:
            row.payload = {**row.payload, **payload}
        if session_id is not None:
            row.session_id = session_id

    return console_transition(frame=frame, change=change, expect_status=expect_status)


def parse_console_cursor(value: str | None) -> int:
    if value in (None, ""):
        return 0
    raw = value.removeprefix("console:")  # type: ignore[union-attr]  # None returned above
    # ASCII digits only (str.isdigit also accepts "²"), and within a bigint.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidInput(f"invalid console cursor {value!r}: use console:<seq>", code="invalid_cursor")
    return int(raw)


PRUNED_KEY = "console_pruned_through"


def console_pruned_through(*, mob: Mob) -> int:
    """The highest console seq that retention deleted (0 when nothing was pruned)."""
    value = MobMetadata.objects.filter(mob=mob, key=PRUNED_KEY).values_list("value", flat=True).first()
    return int(value["seq"]) if value else 0


def console_page(*, mob: Mob, after: str | None, limit: int) -> dict[str, Any]:
    """Keyset page after a cursor. ``next_cursor`` is the last frame returned (never skips).

    A cursor below the retention mark gets ``gap: True``, no frames and ``next_cursor`` = the
    oldest kept position (``console:<pruned_through>``): the frames in between are gone, and the
    client says so instead of silently skipping them. Omitting ``after`` reads from the oldest kept."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    seq = parse_console_cursor(after)
    latest = Mob.objects.filter(pk=mob.pk).values_list("console_seq", flat=True).get()
    if seq > latest:
        raise ReplayUnavailable(
            f"console cursor console:{seq} is past the end (console:{latest})",
            details={"latest_cursor": f"console:{latest}"},
        )
    pruned = console_pruned_through(mob=mob)
    explicit = after not in (None, "")
    if explicit and seq < pruned:
        return _gap_page(seq=seq, pruned=pruned, latest=latest)
    frames = list(ConsoleFrame.objects.filter(mob=mob, seq__gt=max(seq, pruned)).order_by("seq")[:limit])
    # Read the mark again after the rows: the prune deletes and raises the mark in one
    # transaction, so if its delete could have hidden rows from this page the mark shows it.
    if explicit and seq < console_pruned_through(mob=mob):
        return _gap_page(seq=seq, pruned=console_pruned_through(mob=mob), latest=latest)
    start = max(seq, pruned)
    return {
        "frames": frames,
        "next_cursor": frames[-1].cursor if frames else f"console:{start}",
        "latest_cursor": f"console:{latest}",
        "gap": False,
        "pruned_through": f"console:{pruned}",
    }


def _gap_page(*, seq: int, pruned: int, latest: int) -> dict[str, Any]:
    return {
        "frames": [],
        "next_cursor": f"console:{pruned}",
        "latest_cursor": f"console:{latest}",
        "gap": True,
        "pruned_through": f"console:{pruned}",
    }


def console_frames_prune(*, older_than_days: float | None = None, batch_size: int | None = None) -> int:
    """Delete console frames created before the retention window (``LASHOPS_CONSOLE_RETENTION_DAYS``),
    oldest first per mob, at most ``batch_size`` rows per transaction, raising the mob's prune mark
    in the same transaction: an HTTP reader holding a cursor below the mark is told of the gap, a
    cursor above it keeps paging normally. Returns the number of frames deleted.

    The pruned range is always a prefix of the mob's log: the sweep stops at the first frame that
    is young enough to keep or still in flight (accepted, dispatching), so the mark never covers a
    kept frame. The workspace event stream mirroring the frames is pruned by ``events_prune``."""
    days = older_than_days if older_than_days is not None else settings.LASHOPS_CONSOLE_RETENTION_DAYS
    size = batch_size or settings.LASHOPS_CONSOLE_PRUNE_BATCH
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    for mob_pk in Mob.objects.filter(console_seq__gt=0).order_by("pk").values_list("pk", flat=True).iterator():
        while True:
            removed = _console_prune_batch(mob_pk=mob_pk, cutoff=cutoff, size=size)
            deleted += removed
            if removed < size:
                break
    return deleted


def _console_prune_batch(*, mob_pk: int, cutoff: Any, size: int) -> int:
    in_flight = {ConsoleFrame.Status.ACCEPTED, ConsoleFrame.Status.DISPATCHING}
    with transaction.atomic():
        # The (mob, seq) unique index serves this read; old frames are the lowest seqs.
        rows = list(
            ConsoleFrame.objects.filter(mob_id=mob_pk)
            .order_by("seq")
            .values_list("id", "seq", "created_at", "status")[:size]
        )
        doomed: list[tuple[int, int]] = []
        for pk, seq, created_at, status in rows:
            if created_at >= cutoff or status in in_flight:
                break
            doomed.append((pk, seq))
        if not doomed:
            return 0
        top = doomed[-1][1]
        mark, _ = MobMetadata.objects.select_for_update().get_or_create(
            mob_id=mob_pk, key=PRUNED_KEY, defaults={"value": {"seq": 0}}
        )
        if int(mark.value.get("seq", 0)) < top:
            mark.value = {"seq": top}
            mark.save(update_fields=["value", "updated_at"])
        return ConsoleFrame.objects.filter(id__in=[pk for pk, _ in doomed]).delete()[0]
