"""Helpers for the engine tests: in-memory stores, fake providers and a turn driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lashops.runtime.builtin_tools import builtin_tools
from lashops.runtime.memory import MemoryControl, MemoryJournal, MemoryTrace, RecordingEvents
from lashops.runtime.providers.base import ProviderError
from lashops.runtime.providers.scripted import ScriptedProvider
from lashops.runtime.tools import ToolCatalog
from lashops.runtime.turn import RetryPolicy, TurnConfig, TurnResult, run_turn
from lashops.runtime.types import ModelRequest, ModelResponse, ModelSpec

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005)


class ExplodingProvider:
    """A provider that must never be called (replays must use the journal)."""

    name = "exploding"

    def complete(self, request: ModelRequest, *, on_text_delta: Callable[[str], None]) -> ModelResponse:
        raise AssertionError("the provider was called during a replay")


class CrashingProvider:
    """Delegates to the scripted provider, and raises a BaseException (a simulated process
    crash the engine must not swallow) on the chosen call number."""

    name = "scripted"

    def __init__(self, crash_on_call: int) -> None:
        self.inner = ScriptedProvider()
        self.crash_on_call = crash_on_call
        self.calls = 0

    def complete(self, request: ModelRequest, *, on_text_delta: Callable[[str], None]) -> ModelResponse:
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise SimulatedCrash(f"crash on model call {self.calls}")
        return self.inner.complete(request, on_text_delta=on_text_delta)


class SimulatedCrash(BaseException):
    pass


class Harness:
    def __init__(self) -> None:
        self.journal = MemoryJournal()
        self.events = RecordingEvents()
        self.control = MemoryControl()
        self.trace = MemoryTrace()
        self.provider = ScriptedProvider()
        self.catalog = ToolCatalog(builtin_tools())

    def config(self, script: list[dict[str, Any]] | None = None, **overrides: Any) -> TurnConfig:
        parameters = dict(overrides.pop("parameters", {}))
        if script is not None:
            parameters["script"] = script
        defaults: dict[str, Any] = {
            "session_id": "s1",
            "turn_id": "t1",
            "model": ModelSpec(provider="scripted", model="scripted-1", parameters=parameters),
            "system_prompt": "You are helpful.",
            "retry": FAST_RETRY,
        }
        defaults.update(overrides)
        return TurnConfig(**defaults)

    def run(self, config: TurnConfig, user_input: str = "hello", **kwargs: Any) -> TurnResult:
        kwargs.setdefault("provider", self.provider)
        kwargs.setdefault("journal", self.journal)
        kwargs.setdefault("events", self.events)
        kwargs.setdefault("control", self.control)
        kwargs.setdefault("trace", self.trace)
        kwargs.setdefault("catalog", self.catalog)
        return run_turn(config, user_input=user_input, **kwargs)


__all__ = ["FAST_RETRY", "CrashingProvider", "ExplodingProvider", "Harness", "ProviderError", "SimulatedCrash"]
