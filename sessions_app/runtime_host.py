"""The host side of the runtime interfaces: the ORM effect journal, the event sink, the turn
control (cancel, lease, boundary inputs) and the builders for provider, catalog and plugins.

Kept apart from services.py so the turn services read as the lifecycle they are.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from lashops.core.errors import LeaseLost as CoreLeaseLost
from lashops.core.events import EventDraft, publish_live
from lashops.core.models import Effect, Workspace
from lashops.core.services import effect_record, lease_renew
from lashops.runtime.interfaces import LeaseLost
from lashops.runtime.memory import NullTrace
from lashops.runtime.plugins import build_session_plugins, default_plugin_factories, load_plugin_factories
from lashops.runtime.tools import ToolCatalog, load_tool_providers
from lashops.runtime.tracing import JsonlTraceSink
from lashops.runtime.turn import RetryPolicy, TurnConfig
from lashops.runtime.types import ModelSpec
from sessions_app.models import PendingInput, Session, Turn

SESSION_LEASE_SCOPE = "session"


# --- configuration builders --------------------------------------------------------------


@cache
def _tools(paths: tuple[str, ...]) -> tuple:
    return tuple(load_tool_providers(paths))


# Which capability flag (mob profiles' `[profiles.*.tools]`) a tool belongs to; unlisted tools are
# platform tools and count as "builtins".
TOOL_CAPABILITIES = {
    "spawn_agent": "mob",
    "mob_peers": "comms",
    "mob_send_message": "comms",
}


def tool_catalog(session: Session) -> ToolCatalog:
    """The session's catalog (membership is availability): every configured tool, narrowed by
    ``metadata["tools"]`` when present, either a list of tool names or capability flags such as
    ``{"builtins": true, "comms": true, "shell": false}``. Mob-member tools (capability ``comms``)
    exist only for mob members."""
    tools = list(_tools(tuple(settings.LASHOPS_TOOL_PROVIDERS)))
    member = bool(session.metadata.get("mob"))
    tools = [t for t in tools if member or TOOL_CAPABILITIES.get(t.name) != "comms"]
    allowed = session.metadata.get("tools")
    if isinstance(allowed, list):
        tools = [t for t in tools if t.name in allowed]
    elif isinstance(allowed, dict):
        tools = [t for t in tools if allowed.get(TOOL_CAPABILITIES.get(t.name, "builtins"), False)]
    return ToolCatalog(tools, generation=session.tool_catalog_generation)


@cache
def _plugin_factories(paths: tuple[str, ...]) -> tuple:
    return (*default_plugin_factories(), *load_plugin_factories(paths))


def session_plugins(session: Session) -> list:
    """Fresh plugin instances for one drive (hooks must not carry state across drives)."""
    options = dict(session.metadata.get("plugin_options") or {})
    return build_session_plugins(
        list(_plugin_factories(tuple(settings.LASHOPS_PLUGINS))), session_id=session.pk, options=options
    )


_trace_lock = threading.Lock()
_trace_sink: Any = None


def trace_sink() -> Any:
    global _trace_sink
    if not settings.LASHOPS_TRACE_FILE:
        return NullTrace()
    with _trace_lock:
        if _trace_sink is None or getattr(_trace_sink, "_lashops_path", None) != settings.LASHOPS_TRACE_FILE:
            _trace_sink = JsonlTraceSink(settings.LASHOPS_TRACE_FILE)
            _trace_sink._lashops_path = settings.LASHOPS_TRACE_FILE
        return _trace_sink


def turn_config(session: Session, turn: Turn) -> TurnConfig:
    model = ModelSpec.from_dict(session.model)
    if "timeout" not in model.parameters:
        model = ModelSpec(
            model.provider, model.model, {**model.parameters, "timeout": settings.LASHOPS_PROVIDER_TIMEOUT}
        )
    return TurnConfig(
        session_id=session.pk,
        turn_id=turn.pk,
        model=model,
        system_prompt=session.system_prompt,
        prompt_layers=tuple(session.prompt_layers or ()),
        max_steps=settings.LASHOPS_TURN_MAX_STEPS,
        max_input_chars=settings.LASHOPS_MAX_INPUT_CHARS,
        depth=session.depth,
        retry=RetryPolicy(
            max_attempts=settings.LASHOPS_PROVIDER_MAX_ATTEMPTS, base_delay=settings.LASHOPS_PROVIDER_RETRY_BASE_DELAY
        ),
        max_concurrent_tools=settings.LASHOPS_MAX_CONCURRENT_TOOLS,
    )


# --- the effect journal ------------------------------------------------------------------


class OrmEffectJournal:
    """lashops.core's Effect table as the runtime's journal.

    Two host-side economies, both within the durability contract ("a crash between running
    and recording re-runs that one effect"):
    * a model call that finishes the turn (no tool calls) is recorded in the turn's commit
      transaction instead of its own, since nothing runs between it and the commit;
    * an empty boundary-input take is not stored (a re-drive may then take input that arrived
      later, which an uninterrupted run could equally have taken).

    ``first_drive``: the turn's first drive attempt (``drive_attempts == 1``), so no earlier drive
    can have recorded anything under the scope and the journal starts empty without a read.
    """

    def __init__(self, *, workspace_id: int, scope: str, first_drive: bool = False) -> None:
        self.workspace_id = workspace_id
        self.scope = scope
        self.deferred: dict[str, tuple[str, dict]] = {}
        self._owner = threading.get_ident()
        # One read for the whole drive: only this lease holder records effects for the scope, and a
        # fenced-out revenant's late record is resolved by the unique key (first writer wins).
        self.recorded: dict[str, dict] = (
            {} if first_drive else dict(Effect.objects.filter(scope=scope).values_list("replay_key", "outcome"))
        )

    def lookup(self, key: str) -> dict | None:
        if key in self.deferred:
            return self.deferred[key][1]
        return self.recorded.get(key)

    def record(self, key: str, *, kind: str, outcome: dict) -> dict:
        if kind == "inputs" and not outcome.get("inputs"):
            return outcome
        if kind == "llm_call" and outcome.get("ok") and not (outcome.get("response") or {}).get("tool_calls"):
            self.deferred[key] = (kind, outcome)
            return outcome
        try:
            stored = effect_record(
                workspace=self.workspace_id, scope=self.scope, replay_key=key, kind=kind, outcome=outcome
            )
        finally:
            self._release_thread_connection()
        self.recorded[key] = stored
        return stored

    def flush(self) -> None:
        """Write deferred records; call inside the commit transaction."""
        if self.deferred:
            Effect.objects.bulk_create(
                [
                    Effect(workspace_id=self.workspace_id, scope=self.scope, replay_key=k, kind=kind, outcome=o)
                    for k, (kind, o) in self.deferred.items()
                ],
                ignore_conflicts=True,
            )

    def _release_thread_connection(self) -> None:
        # Concurrent tools journal from pool threads; close their connections so none leak.
        if threading.get_ident() != self._owner and not connection.in_atomic_block:
            connection.close()


# --- events ------------------------------------------------------------------------------


class TurnEventSink:
    """Every engine event goes out live at once; durable ones are also buffered and written in
    the turn's commit (a re-drive emits them again, identically, so only the commit is true)."""

    def __init__(self, *, workspace: Workspace, session_id: str, turn_id: str) -> None:
        self.workspace = workspace
        self.subject = {"session": session_id, "turn": turn_id}
        self.durable: list[EventDraft] = []

    def emit(self, type: str, data: dict, *, durable: bool) -> None:
        if type == "turn.started":
            return  # published durably when the turn was admitted
        if durable:
            self.durable.append(EventDraft(type=type, subject=dict(self.subject), data=data))
        publish_live(workspace=self.workspace, type=type, subject=self.subject, data=data)


# --- control -----------------------------------------------------------------------------


class TurnControl:
    """Cancel flag (polled from the database, throttled), lease renewal, and crash-safe
    boundary-input claims."""

    POLL_SECONDS = 0.2

    def __init__(self, *, turn: Turn, lease_key: str, token: int) -> None:
        self.turn = turn
        self.lease_key = lease_key
        self.token = token
        self.ttl = settings.LASHOPS_SESSION_LEASE_TTL
        self._owner = threading.get_ident()
        # ``turn`` was read (or created) by the caller just now: that counts as the first poll.
        self._cancelled = turn.cancel_requested_at is not None
        self._polled = time.monotonic()
        self._renewed = time.monotonic()
        self.claimed_any = False

    def is_cancelled(self) -> bool:
        if self._cancelled or threading.get_ident() != self._owner:
            return self._cancelled
        now = time.monotonic()
        if now - self._polled >= self.POLL_SECONDS:
            self._polled = now
            self._cancelled = Turn.objects.filter(pk=self.turn.pk, cancel_requested_at__isnull=False).exists()
        return self._cancelled

    def check_lease(self) -> None:
        if threading.get_ident() != self._owner:
            return
        if time.monotonic() - self._renewed < self.ttl / 3:
            return
        try:
            lease_renew(scope=SESSION_LEASE_SCOPE, key=self.lease_key, token=self.token, ttl=self.ttl)
        except CoreLeaseLost as exc:
            raise LeaseLost(str(exc)) from None
        self._renewed = time.monotonic()

    def take_boundary_inputs(self) -> list[str]:
        """Claim pending input for this turn; inputs it claimed before a crash come back first."""
        waiting = PendingInput.objects.filter(
            session_id=self.turn.session_id, status__in=[PendingInput.Status.PENDING, PendingInput.Status.CLAIMED]
        )
        if not waiting.exists():  # the common case: no write transaction at all
            return []
        with transaction.atomic():
            rows = list(
                PendingInput.objects.select_for_update()
                .filter(session_id=self.turn.session_id)
                .filter(status__in=[PendingInput.Status.PENDING, PendingInput.Status.CLAIMED])
                .order_by("id")
            )
            rows = [r for r in rows if r.status == PendingInput.Status.PENDING or r.claimed_by == self.turn.pk]
            if not rows:
                return []
            PendingInput.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=PendingInput.Status.CLAIMED, claimed_by=self.turn.pk, updated_at=timezone.now()
            )
        self.claimed_any = True
        return [r.text for r in rows]
