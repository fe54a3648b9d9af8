"""``MemberSessions``: how a mob opens or resumes a member's session and delivers a message to it.

The real implementation calls ``sessions_app`` services. A host (or a test) can plug another
one with ``LASHOPS_MOB_MEMBER_SESSIONS`` (a dotted path to a class or factory)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from lashops.core.models import Workspace
from sessions_app import services as session_services
from sessions_app.models import Session


@dataclass
class MemberSpec:
    """What a member session is built from (after the ``before_create`` hook had its say)."""

    mob_id: str
    identity: str
    profile: str
    model: dict[str, Any]
    system_prompt: str
    tools: dict[str, bool]
    labels: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


class MemberSessions(Protocol):
    def open(self, *, workspace: Workspace, session_id: str, spec: MemberSpec, resume: bool) -> str:
        """Create the session ``session_id`` (``resume=False``) or bind to the existing one
        (``resume=True``). Idempotent by id. Returns the session id."""

    def deliver(self, *, workspace: Workspace, session_id: str, text: str, source_key: str) -> None:
        """Queue ``text`` as input of the session (idempotent by ``source_key``); the turn runs
        in the background."""

    def delete(self, *, workspace: Workspace, session_id: str) -> None: ...


def member_session_id(*, mob_pk: int, identity: str, generation: int) -> str:
    """Deterministic per (identity, generation) so a retried materialization opens the same
    session; matches the session id pattern whatever characters the identity key uses."""
    digest = hashlib.sha1(identity.encode()).hexdigest()[:20]
    return f"mob{mob_pk}.{digest}.g{generation}"


class SessionsAppMemberSessions:
    """Members are ``sessions_app`` sessions."""

    def open(self, *, workspace: Workspace, session_id: str, spec: MemberSpec, resume: bool) -> str:
        session, _ = session_services.session_open(
            workspace=workspace,
            session_id=session_id,
            model=spec.model,
            system_prompt=spec.system_prompt,
            metadata={"mob": spec.mob_id, "identity": spec.identity, "profile": spec.profile, "tools": spec.tools},
        )
        return str(session.pk)

    def deliver(self, *, workspace: Workspace, session_id: str, text: str, source_key: str) -> None:
        session = Session.objects.get(workspace=workspace, pk=session_id)
        session_services.input_enqueue(session=session, text=text, source_key=source_key)

    def delete(self, *, workspace: Workspace, session_id: str) -> None:
        session = Session.objects.filter(workspace=workspace, pk=session_id).first()
        if session is not None:
            session_services.session_delete(session=session)


def member_sessions() -> MemberSessions:
    from lashops.runtime.tools import resolve_dotted_path

    return resolve_dotted_path(settings.LASHOPS_MOB_MEMBER_SESSIONS)()
