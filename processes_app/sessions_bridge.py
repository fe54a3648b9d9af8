"""The processes app's calls into the sessions app (agent turns and wake deliveries).

Resolved lazily so this app works, and says clearly what is missing, when the sessions
app does not provide the service yet."""

from __future__ import annotations

import importlib
import json
from typing import Any

from lashops.core.errors import LashOpsError, NotFound
from lashops.core.models import Workspace


class SessionsUnavailable(LashOpsError):
    status = 501
    code = "sessions_unavailable"


def _service(name: str) -> Any:
    try:
        module = importlib.import_module("sessions_app.services")
    except ImportError as exc:
        raise SessionsUnavailable(f"the sessions app is not available: {exc}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise SessionsUnavailable(f"sessions_app.services.{name} does not exist yet")
    return fn


def _session(workspace: Workspace, session_id: str) -> Any:
    try:
        from sessions_app.models import Session
    except ImportError as exc:
        raise SessionsUnavailable(f"the sessions app is not available: {exc}") from None
    session = Session.objects.filter(workspace=workspace, pk=session_id).first()
    if session is None:
        raise NotFound(f"no session {session_id!r}")
    return session


def enqueue_wake(
    *, workspace: Workspace, session_id: str, process_id: str, source_key: str, payload: dict[str, Any]
) -> None:
    """Queue a process event as input of its wake-target session, exactly once per source key.
    A session that no longer exists gets nothing (the event stays in the process log)."""
    input_enqueue = _service("input_enqueue")
    try:
        session = _session(workspace, session_id)
    except NotFound:
        return
    text = f"[process {process_id}] {payload['event']}: {json.dumps(payload.get('data') or {}, sort_keys=True)}"
    input_enqueue(session=session, text=text, source_key=source_key[:200])


def run_turn(*, workspace: Workspace, session_id: str, text: str, source_key: str) -> dict[str, Any]:
    """Run one turn in a session to its commit and summarise it as JSON."""
    session = _session(workspace, session_id)
    turn_start = _service("turn_start")
    turn = turn_start(session=session, text=text, source_key=source_key[:200])
    if getattr(turn, "status", "") != "committed":
        turn = _service("turn_drive")(turn_id=turn.pk)
    return {
        "turn_id": turn.pk,
        "session_id": session_id,
        "status": turn.status,
        "outcome": getattr(turn, "outcome", ""),
        "final_text": getattr(turn, "final_text", ""),
    }
