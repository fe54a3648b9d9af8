"""The turn machine: prompt -> model -> tools -> ... -> answer, with every effect journaled.

:func:`run_turn` is deterministic given its journal: driving the same turn again with the
journal of an earlier (possibly crashed) drive returns recorded model responses and tool
outcomes instead of re-running them, and produces an identical :class:`TurnResult`.
See ``lashops/runtime/README.md`` for how a host drives it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lashops.runtime import event_types
from lashops.runtime.effects import durable_sleep, journal_lookup, journal_record, run_effect
from lashops.runtime.interfaces import (
    EffectJournal,
    JournalError,
    LeaseLost,
    TraceSink,
    TurnControl,
    TurnEvents,
    replay_key,
)
from lashops.runtime.memory import NullEvents, NullTrace
from lashops.runtime.nodes import NodeDraft, last_node_id, transcript_to_messages
from lashops.runtime.plugins import SessionPlugin, TurnContext
from lashops.runtime.providers.base import Provider, ProviderError
from lashops.runtime.tools import Tool, ToolCatalog, ToolContext, ToolOutput, invoke_tool
from lashops.runtime.types import Message, ModelRequest, ModelResponse, ModelSpec, ToolCall, ToolSpec, Usage

Outcome = Literal["finished", "stopped"]
STOP_REASONS = (
    "cancelled",
    "max_turns",
    "provider_error",
    "tool_failure",
    "invalid_input",
    "runtime_error",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient provider errors: attempt ``n`` fails -> wait
    ``min(max_delay, base_delay * multiplier ** (n - 1))`` (a journaled sleep) -> attempt ``n + 1``."""

    max_attempts: int = 4
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))


@dataclass(frozen=True)
class TurnConfig:
    """Everything about a turn that is not an effect. ``max_steps`` caps model calls per turn
    (exceeding it stops with ``max_turns``); ``depth`` is the subagent depth of the session."""

    session_id: str
    turn_id: str
    model: ModelSpec
    system_prompt: str = ""
    prompt_layers: tuple[str, ...] = ()
    max_steps: int = 16
    max_input_chars: int = 100_000
    treat_missing_done_as_failure: bool = True
    depth: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrent_tools: int = 8


@dataclass(frozen=True)
class TurnResult:
    """The settled outcome of a turn; everything the host commits.

    ``final_text`` is set only when ``outcome == "finished"``. ``nodes`` are the new transcript
    nodes in order. ``llm_calls`` has one dict per successful model call
    (``step, attempt, provider, model, usage, source``). ``usage`` sums them; ``child_usage``
    sums what tools reported for child agents (``total_usage`` = both).
    """

    outcome: Outcome
    stop_reason: str | None
    stop_detail: str | None
    final_text: str
    nodes: tuple[NodeDraft, ...]
    usage: Usage
    llm_calls: tuple[dict[str, Any], ...]
    plugin_state: dict[str, dict[str, Any]]
    accepted_inputs: tuple[str, ...]
    child_usage: Usage
    catalog_generation: int
    steps: int

    @property
    def total_usage(self) -> Usage:
        return self.usage + self.child_usage

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "final_text": self.final_text,
            "nodes": [node.to_dict() for node in self.nodes],
            "usage": self.usage.to_dict(),
            "llm_calls": [dict(call) for call in self.llm_calls],
            "plugin_state": {k: dict(v) for k, v in self.plugin_state.items()},
            "accepted_inputs": list(self.accepted_inputs),
            "child_usage": self.child_usage.to_dict(),
            "catalog_generation": self.catalog_generation,
            "steps": self.steps,
        }

    def digest(self) -> str:
        """A stable hash of the result, for idempotent commit checks."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


class _NullControl:
    def is_cancelled(self) -> bool:
        return False

    def check_lease(self) -> None:
        return None

    def take_boundary_inputs(self) -> list[str]:
        return []


class _Stop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _StreamCancelled(Exception):
    pass


def request_hash(model: str, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
    """Envelope hash of a model request: a replayed call whose prompt changed is a divergence."""
    payload = {"model": model, "messages": [m.to_dict() for m in messages], "tools": [t.to_dict() for t in tools]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def run_turn(
    config: TurnConfig,
    *,
    user_input: str,
    provider: Provider,
    journal: EffectJournal,
    transcript: Sequence[NodeDraft | Mapping[str, Any] | Message] = (),
    catalog: ToolCatalog | None = None,
    plugins: Sequence[SessionPlugin] = (),
    plugin_state: Mapping[str, Mapping[str, Any]] | None = None,
    events: TurnEvents | None = None,
    control: TurnControl | None = None,
    trace: TraceSink | None = None,
    host: Mapping[str, Any] | None = None,
    parent_node_id: str | None = None,
) -> TurnResult:
    """Drive one turn to a :class:`TurnResult`.

    Raises :class:`~lashops.runtime.interfaces.LeaseLost` (do not commit) and
    :class:`~lashops.runtime.interfaces.JournalError` (retry later); every other failure
    ends as ``outcome="stopped"`` with a ``stop_reason``.
    """
    driver = _TurnDriver(
        config=config,
        user_input=user_input,
        provider=provider,
        journal=journal,
        transcript=list(transcript),
        catalog=catalog if catalog is not None else ToolCatalog(),
        plugins=list(plugins),
        plugin_state=plugin_state or {},
        events=events or NullEvents(),
        control=control or _NullControl(),
        trace=trace or NullTrace(),
        host=host or {},
        parent_node_id=parent_node_id if parent_node_id is not None else last_node_id(transcript),
    )
    return driver.run()


class _TurnDriver:
    def __init__(
        self,
        *,
        config: TurnConfig,
        user_input: str,
        provider: Provider,
        journal: EffectJournal,
        transcript: list[NodeDraft | Mapping[str, Any] | Message],
        catalog: ToolCatalog,
        plugins: list[SessionPlugin],
        plugin_state: Mapping[str, Mapping[str, Any]],
        events: TurnEvents,
        control: TurnControl,
        trace: TraceSink,
        host: Mapping[str, Any],
        parent_node_id: str | None,
    ) -> None:
        self.config = config
        self.user_input = user_input
        self.provider = provider
        self.journal = journal
        self.transcript = transcript
        self.catalog = catalog
        self.plugins = plugins
        self.plugin_state = plugin_state
        self.events = events
        self.control = control
        self.tracer = trace
        self.host = host
        self.parent_node_id = parent_node_id
        self.nodes: list[NodeDraft] = []
        self.usage = Usage()
        self.child_usage = Usage()
        self.llm_calls: list[dict[str, Any]] = []
        self.accepted_inputs: list[str] = []
        self.steps = 0
        self.generation = catalog.generation
        self._effective_tools: dict[str, Tool] = {}

    # -- helpers --------------------------------------------------------------------------

    def _key(self, step: int, kind: str, effect_id: str) -> str:
        return replay_key(self.config.session_id, self.config.turn_id, step, kind, effect_id)

    def _trace(self, type: str, **data: Any) -> None:
        self.tracer.trace({"type": type, "session_id": self.config.session_id, "turn_id": self.config.turn_id, **data})

    def _emit(self, type: str, data: dict[str, Any], *, durable: bool) -> None:
        self.events.emit(type, {"turn_id": self.config.turn_id, **data}, durable=durable)

    def _add_node(self, kind: str, payload: dict[str, Any], caused_by: str | None) -> NodeDraft:
        parent = self.nodes[-1].id if self.nodes else self.parent_node_id
        node = NodeDraft(
            id=f"{self.config.turn_id}:{len(self.nodes)}",
            kind=kind,  # type: ignore[arg-type]
            parent_id=parent,
            caused_by=caused_by,
            payload=payload,
        )
        self.nodes.append(node)
        return node

    def _check(self) -> None:
        self.control.check_lease()
        if self.control.is_cancelled():
            raise _Stop("cancelled", "turn cancelled")

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> TurnResult:
        config = self.config
        for plugin in self.plugins:
            if plugin.id in self.plugin_state:
                plugin.restore(self.plugin_state[plugin.id])
        ctx = TurnContext(
            session_id=config.session_id,
            turn_id=config.turn_id,
            user_input=self.user_input,
            depth=config.depth,
            host=self.host,
        )
        self._emit(event_types.TURN_STARTED, {"session_id": config.session_id}, durable=True)
        self._trace("turn_started", provider=config.model.provider, model=config.model.model, depth=config.depth)
        final_text = ""
        try:
            self._validate_input()
            for plugin in self.plugins:
                plugin.before_turn(ctx)
            caused_by = self._add_node("user", {"text": self.user_input}, None).id
            extra_tools = [tool for plugin in self.plugins for tool in plugin.tools()]
            tools = self.catalog.effective(host=self.host, depth=config.depth, extra=extra_tools)
            self._effective_tools = tools
            system_text = self._system_text()
            for step in range(config.max_steps):
                if step > 0:
                    caused_by = self._take_boundary_inputs(step) or caused_by
                self._check()
                self.steps = step + 1
                response = self._call_model(step, system_text, tools)
                assistant = self._add_node(
                    "assistant", {"text": response.text, "step": step, "model": config.model.model}, caused_by
                )
                if not response.tool_calls:
                    if response.finish_reason != "stop" and config.treat_missing_done_as_failure:
                        raise _Stop(
                            "runtime_error",
                            f"model ended without a final answer (finish_reason={response.finish_reason})",
                        )
                    final_text = response.text
                    break
                caused_by = self._run_tools(step, response.tool_calls, tools, assistant.id)
            else:
                raise _Stop("max_turns", f"no final answer after {config.max_steps} model calls")
            result = self._result("finished", None, None, final_text)
        except _Stop as stop:
            result = self._stopped(stop.reason, stop.detail)
        except (LeaseLost, JournalError):
            raise
        except Exception as exc:
            result = self._stopped("runtime_error", f"{type(exc).__name__}: {exc}")

        for plugin in self.plugins:
            try:
                plugin.after_turn(ctx, result)
            except Exception as exc:
                self._trace("plugin_error", plugin=plugin.id, hook="after_turn", error=f"{type(exc).__name__}: {exc}")
        result = replace(result, plugin_state={plugin.id: plugin.snapshot() for plugin in self.plugins})
        self._emit(
            event_types.TURN_FINISHED,
            {
                "outcome": result.outcome,
                "stop_reason": result.stop_reason,
                "stop_detail": result.stop_detail,
                "usage": result.usage.to_dict(),
            },
            durable=True,
        )
        self._trace(
            "turn_completed",
            outcome=result.outcome,
            stop_reason=result.stop_reason,
            steps=result.steps,
            usage=result.usage.to_dict(),
            child_usage=result.child_usage.to_dict(),
        )
        return result

    def _validate_input(self) -> None:
        if not self.user_input.strip():
            raise _Stop("invalid_input", "input is empty")
        if len(self.user_input) > self.config.max_input_chars:
            raise _Stop(
                "invalid_input",
                f"input has {len(self.user_input)} characters; the limit is {self.config.max_input_chars}",
            )

    def _system_text(self) -> str:
        parts = [self.config.system_prompt, *self.config.prompt_layers]
        for plugin in self.plugins:
            parts.extend(plugin.prompt_contributions())
        return "\n\n".join(part for part in parts if part and part.strip())

    def _stopped(self, reason: str, detail: str) -> TurnResult:
        self._add_node(
            "system",
            {"event": "turn.stopped", "stop_reason": reason, "detail": detail},
            self.nodes[-1].id if self.nodes else None,
        )
        return self._result("stopped", reason, detail, "")

    def _result(self, outcome: Outcome, reason: str | None, detail: str | None, final_text: str) -> TurnResult:
        return TurnResult(
            outcome=outcome,
            stop_reason=reason,
            stop_detail=detail,
            final_text=final_text,
            nodes=tuple(self.nodes),
            usage=self.usage,
            llm_calls=tuple(self.llm_calls),
            plugin_state={},
            accepted_inputs=tuple(self.accepted_inputs),
            child_usage=self.child_usage,
            catalog_generation=self.generation,
            steps=self.steps,
        )

    # -- boundary inputs ------------------------------------------------------------------

    def _take_boundary_inputs(self, step: int) -> str | None:
        self.control.check_lease()
        outcome, _ = run_effect(
            self.journal,
            self._key(step, "inputs", "boundary"),
            kind="inputs",
            run=lambda: {"inputs": [str(text) for text in self.control.take_boundary_inputs()]},
        )
        texts = list(outcome.get("inputs") or [])
        last_id = None
        for text in texts:
            node = self._add_node("user", {"text": text, "boundary": True}, None)
            last_id = node.id
        if texts:
            self.accepted_inputs.extend(texts)
            self._emit(event_types.INPUT_ACCEPTED, {"step": step, "inputs": texts}, durable=True)
        return last_id

    # -- model calls ----------------------------------------------------------------------

    def _messages(self, system_text: str) -> list[Message]:
        messages = [Message(role="system", content=system_text)] if system_text else []
        return messages + transcript_to_messages([*self.transcript, *self.nodes])

    def _call_model(self, step: int, system_text: str, tools: dict[str, Tool]) -> ModelResponse:
        config = self.config
        messages = self._messages(system_text)
        specs = tuple(tool.spec for tool in tools.values())
        envelope = request_hash(config.model.model, messages, specs)
        self._trace(
            "prompt_built", step=step, messages=len(messages), tools=[spec.name for spec in specs], hash=envelope
        )
        policy = config.retry
        for attempt in range(1, max(1, policy.max_attempts) + 1):
            key = self._key(step, "llm_call", f"attempt-{attempt}")
            correlation_id = f"{config.turn_id}/{step}/attempt-{attempt}"
            outcome = journal_lookup(self.journal, key)
            replayed = outcome is not None
            if outcome is None:
                self._check()
                outcome = self._attempt(step, attempt, correlation_id, messages, specs, envelope)
                outcome = journal_record(self.journal, key, kind="llm_call", outcome=outcome)
            elif outcome.get("request_hash") != envelope:
                raise _Stop(
                    "runtime_error",
                    f"replay divergence: the recorded model call {key} was made with a different prompt",
                )
            if outcome.get("ok"):
                response = ModelResponse.from_dict(outcome["response"])
                response = replace(response, tool_calls=self._normalise_calls(step, response.tool_calls))
                self.usage = self.usage + response.usage
                call = {
                    "step": step,
                    "attempt": attempt,
                    "provider": config.model.provider,
                    "model": config.model.model,
                    "usage": response.usage.to_dict(),
                    "source": "turn",
                }
                self.llm_calls.append(call)
                self._emit(
                    event_types.USAGE, {"source": "turn", "step": step, **response.usage.to_dict()}, durable=False
                )
                self._trace(
                    "llm_call_completed",
                    step=step,
                    attempt=attempt,
                    replayed=replayed,
                    finish_reason=response.finish_reason,
                    tool_calls=[c.name for c in response.tool_calls],
                    text_chars=len(response.text),
                )
                self._trace(
                    "token_usage", step=step, source="turn", model=config.model.model, **response.usage.to_dict()
                )
                return response
            error = str(outcome.get("error") or "provider error")
            self._trace(
                "llm_call_failed",
                step=step,
                attempt=attempt,
                replayed=replayed,
                error=error,
                transient=bool(outcome.get("transient")),
                status=outcome.get("status"),
            )
            if not outcome.get("transient"):
                raise _Stop("provider_error", error)
            if attempt >= policy.max_attempts:
                raise _Stop("provider_error", f"gave up after {attempt} attempts: {error}")
            delay = policy.delay(attempt)
            self._emit(
                event_types.MODEL_RETRY,
                {"step": step, "attempt": attempt, "delay": delay, "error": error},
                durable=False,
            )
            slept = durable_sleep(
                self.journal,
                self._key(step, "sleep", f"retry-{attempt}"),
                delay,
                is_cancelled=self.control.is_cancelled,
            )
            if not slept:
                raise _Stop("cancelled", "turn cancelled while waiting to retry the model call")
        raise _Stop("provider_error", "no model attempt was made")  # max_attempts < 1 is clamped; unreachable

    def _attempt(
        self,
        step: int,
        attempt: int,
        correlation_id: str,
        messages: list[Message],
        specs: tuple[ToolSpec, ...],
        envelope: str,
    ) -> dict[str, Any]:
        """One real provider attempt, as a journal outcome."""
        config = self.config
        streamed: list[str] = []
        meta = {"step": step, "attempt": attempt, "correlation_id": correlation_id}
        self._emit(event_types.MODEL_REQUEST_STARTED, {**meta, "model": config.model.model}, durable=False)
        self._trace(
            "llm_call_started", step=step, attempt=attempt, provider=config.model.provider, model=config.model.model
        )

        def on_text_delta(chunk: str) -> None:
            if self.control.is_cancelled():
                raise _StreamCancelled()
            streamed.append(chunk)
            self._emit(event_types.TEXT_DELTA, {**meta, "text": chunk}, durable=False)

        request = ModelRequest(
            model=config.model.model,
            messages=tuple(messages),
            tools=specs,
            parameters=dict(config.model.parameters),
            attempt=attempt,
        )
        try:
            response = self.provider.complete(request, on_text_delta=on_text_delta)
        except _StreamCancelled:
            self._emit(event_types.MODEL_ATTEMPT_RESET, {**meta, "reason": "cancelled"}, durable=False)
            raise _Stop("cancelled", "turn cancelled while the model was answering") from None
        except ProviderError as exc:
            failure = {"error": str(exc), "transient": exc.transient, "status": exc.status}
        except Exception as exc:
            failure = {"error": f"{type(exc).__name__}: {exc}", "transient": False, "status": None}
        else:
            return {"ok": True, "response": response.to_dict(), "request_hash": envelope}
        if streamed:
            self._emit(event_types.MODEL_ATTEMPT_RESET, {**meta, "reason": "attempt_failed"}, durable=False)
        if self.control.is_cancelled():
            raise _Stop("cancelled", "turn cancelled while the model was answering")
        return {"ok": False, "request_hash": envelope, **failure}

    def _normalise_calls(self, step: int, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
        # Call ids key tool attempts in the journal, so they must be non-empty and unique.
        seen: set[str] = set()
        normalised = []
        for index, call in enumerate(calls):
            call_id = call.id
            if not call_id or call_id in seen:
                call_id = f"{self.config.turn_id}-{step}-{index}"
            seen.add(call_id)
            normalised.append(ToolCall(id=call_id, name=call.name, arguments=call.arguments))
        return tuple(normalised)

    # -- tools ----------------------------------------------------------------------------

    def _run_tools(self, step: int, calls: tuple[ToolCall, ...], tools: dict[str, Tool], assistant_id: str) -> str:
        call_nodes = [
            self._add_node(
                "tool_call", {"call_id": call.id, "name": call.name, "arguments": call.arguments}, assistant_id
            )
            for call in calls
        ]
        outputs: list[ToolOutput | None] = [None] * len(calls)
        replayed = [False] * len(calls)
        pending: list[int] = []
        for index, call in enumerate(calls):
            self._emit(
                event_types.TOOL_CALL_STARTED,
                {"step": step, "call_id": call.id, "name": call.name, "arguments": call.arguments},
                durable=True,
            )
            self._trace("tool_call_started", step=step, call_id=call.id, name=call.name)
            blocked = None
            for plugin in self.plugins:
                blocked = plugin.before_tool(call)
                if blocked is not None:
                    break
            if blocked is not None:
                outputs[index] = blocked
                continue
            recorded = journal_lookup(self.journal, self._key(step, "tool_attempt", call.id))
            if recorded is not None:
                outputs[index] = ToolOutput.from_dict(recorded)
                replayed[index] = True
            else:
                pending.append(index)

        if pending:
            self._execute_pending(step, calls, pending, outputs)

        last_id = call_nodes[-1].id
        fatal: list[str] = []
        for index, call in enumerate(calls):
            output = outputs[index]
            assert output is not None
            for plugin in self.plugins:
                output = plugin.after_tool(call, output)
            if output.child_usage is not None:
                self.child_usage = self.child_usage + output.child_usage
                self._emit(
                    event_types.USAGE,
                    {"source": "child", "call_id": call.id, **output.child_usage.to_dict()},
                    durable=False,
                )
            if output.fatal:
                fatal.append(f"{call.name} ({call.id}): {output.content}")
            node = self._add_node(
                "tool_result",
                {"call_id": call.id, "name": call.name, "content": output.content, "is_error": output.is_error},
                call_nodes[index].id,
            )
            last_id = node.id
            self._emit(
                event_types.TOOL_CALL_COMPLETED,
                {
                    "step": step,
                    "call_id": call.id,
                    "name": call.name,
                    "is_error": output.is_error,
                    "content": output.content,
                },
                durable=True,
            )
            self._trace(
                "tool_call_completed",
                step=step,
                call_id=call.id,
                name=call.name,
                is_error=output.is_error,
                replayed=replayed[index],
                content_chars=len(output.content),
            )
        if fatal:
            raise _Stop("tool_failure", "; ".join(fatal))
        if self.control.is_cancelled():
            raise _Stop("cancelled", "turn cancelled during tool calls")
        return last_id

    def _execute_pending(
        self, step: int, calls: tuple[ToolCall, ...], pending: list[int], outputs: list[ToolOutput | None]
    ) -> None:
        self.control.check_lease()
        concurrent = (
            len(pending) > 1
            and self.config.max_concurrent_tools > 1
            and all((tool := self._tools_for(calls[i])) is not None and tool.concurrent_safe for i in pending)
        )
        if concurrent:
            with ThreadPoolExecutor(max_workers=min(len(pending), self.config.max_concurrent_tools)) as pool:
                futures = {pool.submit(self._execute, step, calls[i]): i for i in pending}
                for future in as_completed(futures):
                    outputs[futures[future]] = self._record_tool(step, calls[futures[future]], future.result())
            return
        for index in pending:
            self.control.check_lease()
            outputs[index] = self._record_tool(step, calls[index], self._execute(step, calls[index]))

    def _tools_for(self, call: ToolCall) -> Tool | None:
        return self._effective_tools.get(call.name)

    def _execute(self, step: int, call: ToolCall) -> ToolOutput | None:
        """Run one tool call; ``None`` when it was cancelled before starting (not journaled)."""
        if self.control.is_cancelled():
            return None
        ctx = ToolContext(
            session_id=self.config.session_id,
            turn_id=self.config.turn_id,
            call_id=call.id,
            idempotency_key=self._key(step, "tool_attempt", call.id),
            journal=self.journal,
            host=self.host,
            depth=self.config.depth,
            is_cancelled=self.control.is_cancelled,
        )
        return invoke_tool(self._tools_for(call), call, ctx, known=self._effective_tools)

    def _record_tool(self, step: int, call: ToolCall, output: ToolOutput | None) -> ToolOutput:
        if output is None:
            return ToolOutput.error("cancelled before running")
        recorded = journal_record(
            self.journal, self._key(step, "tool_attempt", call.id), kind="tool_attempt", outcome=output.to_dict()
        )
        return ToolOutput.from_dict(recorded)
