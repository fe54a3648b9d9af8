"""Sessions: open (idempotent by id), park/close, delete."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import InvalidInput
from lashops.core.events import publish
from lashops.core.models import Effect, Lease, Workspace
from lashops.runtime.providers import PROVIDERS
from lashops.runtime.types import ModelSpec
from sessions_app.errors import (
    SessionBusy,
    SessionConflict,
    SessionNotFound,
)
from sessions_app.models import (
    Session,
    session_id_validator,
)
from sessions_app.runtime_host import (
    SESSION_LEASE_SCOPE,
    trace_sink,
)
from sessions_app.services.attachments import _release_unheld
from sessions_app.services.common import _subject

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
                publish(workspace=workspace, type=event_types.SESSION_RESUMED, subject=_subject(existing.pk))
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
            type=event_types.SESSION_OPENED,
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
        publish(
            workspace=session.workspace, type=event_types.SESSION_STATUS_EVENT[status], subject=_subject(session.pk)
        )
    session.refresh_from_db()
    return session


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
        report.update(_delete_reports(session))
        Lease.objects.filter(scope=SESSION_LEASE_SCOPE, key=session.pk).delete()
        workspace = locked.workspace
        held = list(locked.attachments.values_list("attachment_id", flat=True))
        locked.delete()
        _release_unheld(held)
        publish(workspace=workspace, type=event_types.SESSION_DELETED, subject=_subject(session.pk), data=report)
    return report


class SessionDeleteReporter(Protocol):
    def __call__(self, *, workspace: Workspace, session_id: str) -> dict[str, Any] | None: ...


# What other apps add to a session's delete report: ``session_delete`` calls each reporter in its
# transaction, before the session's rows go, and puts the answer in the report under the name it
# was registered with. sessions_app imports none of them (processes_app registers "process" in
# its AppConfig.ready()).
_delete_reporters: dict[str, SessionDeleteReporter] = {}


def session_delete_reporter_register(*, name: str, reporter: SessionDeleteReporter) -> None:
    """Have every ``session_delete`` call ``reporter(workspace=..., session_id=...)`` and report
    its answer under ``name`` (registering a name again replaces its reporter)."""
    _delete_reporters[name] = reporter


def _delete_reports(session: Session) -> dict[str, Any]:
    return {
        name: reporter(workspace=session.workspace, session_id=session.pk)
        for name, reporter in _delete_reporters.items()
    }
