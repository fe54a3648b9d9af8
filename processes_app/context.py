"""What a process definition gets as ``ctx``: journaled steps, durable sleeps, signal
waits, child processes, external work completed from outside, emitted events and agent
turns.

Every operation takes the next ordinal of the process's journal. Its outcome is recorded
in the core effect journal under ``process:{id}/{kind}/{name}/{ordinal}`` (scope
``process:{id}``), fenced by the process lease. On resume the definition runs again from
the top and recorded outcomes are returned instead of re-running; an operation whose kind
or name differs from what the journal holds at that ordinal fails the process with
``replay_mismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from lashops.core import event_types
from lashops.core.errors import NotFound
from lashops.core.models import Effect, Workspace
from processes_app.errors import Park, ReplayMismatch
from sessions_app import services as session_services
from sessions_app.models import Session

if TYPE_CHECKING:
    from processes_app.engine import ProcessRun


@dataclass
class JournalEntry:
    kind: str
    name: str
    outcome: dict[str, Any]


Journal = tuple[dict[int, JournalEntry], dict[str, dict[str, Any]]]


def load_journals(process_ids: list[str]) -> dict[str, Journal]:
    """(ordinal -> entry, side records by replay key) for each process, in one query."""
    journals: dict[str, Journal] = {pid: ({}, {}) for pid in process_ids}
    scopes = {f"process:{pid}": pid for pid in process_ids}
    rows = Effect.objects.filter(scope__in=list(scopes)).values_list("scope", "replay_key", "kind", "outcome")
    for scope, key, kind, outcome in rows:
        entries, side = journals[scopes[scope]]
        if kind.startswith("process.") and "ordinal" in outcome:
            entries[int(outcome["ordinal"])] = JournalEntry(
                kind=kind[8:], name=outcome.get("name", ""), outcome=outcome
            )
        else:
            side[key] = outcome
    return journals


def load_journal(process_id: str) -> Journal:
    return load_journals([process_id])[process_id]


class ProcessContext:
    """The API a process definition programs against."""

    def __init__(self, run: ProcessRun, *, journal: Journal | None = None) -> None:
        self._run = run
        self.process_id: str = run.process.id
        self.workspace = run.process.workspace
        self.input = run.process.input
        # ``journal``: read for a whole claimed batch at once (only this lease holder writes it).
        self._journal, self._side = journal if journal is not None else load_journal(self.process_id)
        self._ordinal = 0
        self._consumed: dict[str, int] = {}

    # --- journal plumbing -------------------------------------------------------------

    def _key(self, kind: str, name: str, ordinal: int) -> str:
        return f"process:{self.process_id}/{kind}/{name}/{ordinal}"

    def _next(self, kind: str, name: str) -> tuple[int, dict[str, Any] | None]:
        ordinal = self._ordinal
        self._ordinal += 1
        entry = self._journal.get(ordinal)
        if entry is None:
            return ordinal, None
        if (entry.kind, entry.name) != (kind, name):
            raise ReplayMismatch(ordinal, (entry.kind, entry.name), (kind, name))
        return ordinal, entry.outcome

    def _record(
        self, kind: str, name: str, ordinal: int, outcome: dict[str, Any], log: list | None = None, then=None
    ) -> dict[str, Any]:
        full = {"name": name, "ordinal": ordinal, **outcome}
        return self._run.record(
            key=self._key(kind, name, ordinal), kind=f"process.{kind}", outcome=full, log=log or [], then=then
        )

    # --- operations -------------------------------------------------------------------

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once; its JSON result is journaled and returned on replay.
        A step that raises is not recorded (the process fails); a crash between running and
        recording re-runs that one step (its record rides on the process's next write)."""
        ordinal, recorded = self._next("step", name)
        if recorded is not None:
            return recorded["value"]
        self._run.flush()  # the previous step is recorded before this one runs
        self._run.boundary()
        value = fn(*args, **kwargs)
        # Recorded with the run's next write (see ProcessRun): often its completion.
        self._run.defer(
            key=self._key("step", name, ordinal),
            kind="process.step",
            outcome={"name": name, "ordinal": ordinal, "value": value},
            log=[(event_types.PROCESS_STEP_COMPLETED, {"step": name, "ordinal": ordinal})],
        )
        return value

    def sleep(self, seconds: float) -> None:
        """A durable timer: the process parks (freeing its worker slot) until it is due."""
        ordinal, recorded = self._next("sleep", "sleep")
        if recorded is None:
            self._run.boundary()
            until = timezone.now() + timedelta(seconds=max(0.0, float(seconds)))
            recorded = self._record("sleep", "sleep", ordinal, {"seconds": seconds, "until": until.isoformat()})
        until = parse_datetime(recorded["until"])  # type: ignore[assignment]  # None checked below
        if until is not None and until > timezone.now():
            raise Park(wait_kind="timer", until=until)

    def wait_signal(self, name: str, *, timeout: float | None = None) -> Any:
        """Wait for the next ``name`` signal and return its payload (``None`` on timeout).
        Signals queue in order; repeated waits consume them in order; one sent before the
        wait is never lost."""
        definition = self._run.definition
        if name not in definition.signals:
            raise ValueError(f"definition {definition.name!r} does not declare the signal {name!r}")
        ordinal, recorded = self._next("signal", name)
        if recorded is not None:
            if recorded.get("received"):
                self._consumed[name] = self._consumed.get(name, 0) + 1
            return recorded.get("payload")
        index = self._consumed.get(name, 0)
        deadline = None
        if timeout is not None:
            deadline_key = self._key("deadline", name, ordinal)
            side = self._side.get(deadline_key)
            if side is None:
                until = timezone.now() + timedelta(seconds=max(0.0, float(timeout)))
                side = self._run.record_side(
                    key=deadline_key, kind="process_deadline", outcome={"until": until.isoformat()}
                )
                self._side[deadline_key] = side
            deadline = parse_datetime(side["until"])
        self._run.boundary()
        signal = self._run.signal_at(name, index)
        if signal is not None:
            outcome = self._record("signal", name, ordinal, {"received": True, "payload": signal[1], "seq": signal[0]})
            self._consumed[name] = index + 1
            return outcome["payload"]
        if deadline is not None and deadline <= timezone.now():
            self._record("signal", name, ordinal, {"received": False, "payload": None})
            return None
        raise Park(
            wait_kind="signal",
            until=deadline,
            signal=name,
            ready=lambda: self._run.signal_at(name, index) is not None,
        )

    def start_child(
        self, definition: str, input: Any = None, *, disposition: str | None = None, child_id: str | None = None
    ) -> str:
        """Start a child process (journaled: a replay returns the same child id)."""
        return self._start("child_start", definition, input, child_id, disposition=disposition)

    def await_child(self, child_id: str) -> dict[str, Any]:
        """Wait until the child is terminal; returns ``{"status", "output", "error"}``."""
        ordinal, recorded = self._next("child_await", child_id)
        if recorded is not None:
            return recorded["result"]
        self._run.boundary()
        result = self._run.child_result(child_id)
        if result is None:
            raise Park(wait_kind="child", child=child_id, ready=lambda: self._run.child_result(child_id) is not None)
        return self._record("child_await", child_id, ordinal, {"result": result})["result"]

    def run_child(self, definition: str, input: Any = None, **kwargs: Any) -> dict[str, Any]:
        return self.await_child(self.start_child(definition, input, **kwargs))

    def start_external(
        self, name: str, input: Any = None, *, timeout: float | None = None, child_id: str | None = None
    ) -> str:
        """Hand work to an outside system: start an external child process (``kind`` external,
        ``externally_owned``, labelled ``name``) that its owner ends with
        ``POST /api/processes/{id}/complete``; with ``timeout`` (seconds) it fails with
        ``deadline_exceeded`` if no completion comes in time. Journaled: a replay returns the
        same child id. Await it with ``await_child``."""
        return self._start(
            "external_start",
            name,
            input,
            child_id,
            disposition="externally_owned",
            kind="external",
            timeout_seconds=timeout,
        )

    def _start(
        self, entry: str, definition: str, input: Any, child_id: str | None, *, disposition: str | None, **extra: Any
    ) -> str:
        """Start a child process once (the journal entry ``entry`` holds its id for replays);
        ``disposition=None`` inherits the parent's."""
        ordinal, recorded = self._next(entry, definition)
        if recorded is not None:
            return recorded["child_id"]
        self._run.boundary()
        cid = child_id or _child_id(self.process_id, ordinal)

        def start_it() -> None:
            from processes_app.services import process_start

            parent = self._run.process
            process_start(
                workspace=parent.workspace,
                process_id=cid,
                definition=definition,
                input=input if input is not None else {},
                disposition=disposition or parent.disposition,
                provenance={**parent.provenance, "parent": parent.id},
                parent_id=parent.id,
                **extra,
            )

        started: dict[str, Any] = {"child": cid, "definition": definition}
        if extra.get("kind") == "external":
            started["external"] = True
        outcome = self._record(
            entry,
            definition,
            ordinal,
            {"child_id": cid},
            log=[(event_types.PROCESS_CHILD_STARTED, started)],
            then=start_it,
        )
        return outcome["child_id"]

    def run_external(self, name: str, input: Any = None, **kwargs: Any) -> dict[str, Any]:
        """``start_external`` and wait for its completion: ``{"status", "output", "error"}``."""
        return self.await_child(self.start_external(name, input, **kwargs))

    def emit(self, type: str, data: dict[str, Any] | None = None) -> None:
        """Append a process event; with a wake target it reaches that session as queued
        input, exactly once (the source key is the event's journal key)."""
        ordinal, recorded = self._next("emit", type)
        if recorded is not None:
            return
        self._run.boundary()
        key = self._key("emit", type, ordinal)
        payload = {"event": type, "data": data or {}}

        def deliver() -> None:
            self._run.deliver_wake(source_key=key, payload=payload)

        self._record(
            "emit", type, ordinal, {"data": data or {}}, log=[(event_types.PROCESS_EMITTED, payload)], then=deliver
        )

    def run_agent_turn(self, *, session_id: str, input: str) -> dict[str, Any]:
        """Run one agent turn in a session (journaled: a replay returns the recorded turn)."""
        ordinal, recorded = self._next("agent_turn", session_id)
        if recorded is not None:
            return recorded["turn"]
        self._run.flush()
        self._run.boundary()
        turn = _agent_turn(
            workspace=self.workspace,
            session_id=session_id,
            text=input,
            source_key=self._key("agent_turn", session_id, ordinal),
        )
        return self._record(
            "agent_turn",
            session_id,
            ordinal,
            {"turn": turn},
            log=[(event_types.PROCESS_AGENT_TURN, {"session": session_id})],
        )["turn"]


def _agent_turn(*, workspace: Workspace, session_id: str, text: str, source_key: str) -> dict[str, Any]:
    """Run one turn in a session to its commit and summarise it as JSON."""
    session = Session.objects.filter(workspace=workspace, pk=session_id).first()
    if session is None:
        raise NotFound(f"no session {session_id!r}")
    turn = session_services.turn_start(session=session, text=text, source_key=source_key[:200])
    if turn.status != "committed":
        turn = session_services.turn_drive(turn_id=turn.pk)
    return {
        "turn_id": turn.pk,
        "session_id": session_id,
        "status": turn.status,
        "outcome": turn.outcome,
        "final_text": turn.final_text,
    }


def _child_id(parent_id: str, ordinal: int) -> str:
    cid = f"{parent_id}.c{ordinal}"
    if len(cid) <= 64:
        return cid
    import hashlib

    return f"p_{hashlib.sha256(cid.encode()).hexdigest()[:40]}"
