"""Queued input and session commands: taken by a running turn or by the next one."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import Conflict, InvalidInput
from lashops.core.events import publish
from lashops.core.runner import dispatch
from sessions_app.errors import (
    InputNotFound,
    SessionBusy,
    SessionClosed,
)
from sessions_app.models import (
    PendingInput,
    Session,
    SessionCommand,
    Turn,
)
from sessions_app.services.admission import _admit, _check_input
from sessions_app.services.common import _subject

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
                type=event_types.INPUT_QUEUED,
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
            raise InputNotFound(f"no pending input {source_key!r}")
        if row.status == PendingInput.Status.CANCELLED:
            return row
        if row.status != PendingInput.Status.PENDING:
            raise Conflict(f"input {source_key!r} is already {row.status}", code="input_not_pending")
        row.status = PendingInput.Status.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        publish(
            workspace=session.workspace,
            type=event_types.INPUT_CANCELLED,
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
                type=event_types.COMMAND_APPLIED,
                subject=_subject(session.pk),
                data={"kind": command.kind, "source_key": command.source_key, "reason": command.reason},
            )
    session.refresh_from_db()
