"""Turn admission: check the input, claim the session's lane and create the turn."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from lashops.core import event_types
from lashops.core.events import publish
from sessions_app.errors import (
    InvalidTurnInput,
    SessionBusy,
    SessionClosed,
)
from sessions_app.models import (
    PendingInput,
    Session,
    Turn,
)
from sessions_app.services.common import _subject

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
    accept_inputs: Sequence[int] = (),
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
        type=event_types.TURN_STARTED,
        subject=_subject(session.pk, turn=turn.pk),
        data={"turn_id": turn.pk, "index": index, "input": text, "background": background},
    )
    return turn
