"""In-memory implementations of the host interfaces, for tests and embedded use.

None of these is durable; they exist so the turn machine runs without a database.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from lashops.runtime.interfaces import LeaseLost


class MemoryJournal:
    """A thread-safe dict-backed :class:`~lashops.runtime.interfaces.EffectJournal`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        self.kinds: dict[str, str] = {}
        self.order: list[str] = []

    def lookup(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            outcome = self.entries.get(key)
            return copy.deepcopy(outcome) if outcome is not None else None

    def record(self, key: str, *, kind: str, outcome: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if key not in self.entries:
                self.entries[key] = copy.deepcopy(outcome)
                self.kinds[key] = kind
                self.order.append(key)
            return copy.deepcopy(self.entries[key])

    def keys_of_kind(self, kind: str) -> list[str]:
        with self._lock:
            return [key for key in self.order if self.kinds[key] == kind]

    def copy(self) -> MemoryJournal:
        clone = MemoryJournal()
        with self._lock:
            clone.entries = copy.deepcopy(self.entries)
            clone.kinds = dict(self.kinds)
            clone.order = list(self.order)
        return clone


class RecordingEvents:
    """Collects emitted events as ``(type, data, durable)`` tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any], bool]] = []

    def emit(self, type: str, data: dict[str, Any], *, durable: bool) -> None:
        with self._lock:
            self.events.append((type, copy.deepcopy(data), durable))

    def types(self) -> list[str]:
        return [event[0] for event in self.events]

    def of_type(self, type: str) -> list[dict[str, Any]]:
        return [data for kind, data, _ in self.events if kind == type]

    def durable(self) -> list[tuple[str, dict[str, Any]]]:
        return [(kind, data) for kind, data, durable in self.events if durable]


class NullEvents:
    def emit(self, type: str, data: dict[str, Any], *, durable: bool) -> None:
        return None


class MemoryControl:
    """A :class:`~lashops.runtime.interfaces.TurnControl` driven by the test: ``cancel()``,
    ``lose_lease()`` and ``queue_input(text)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._lease_lost = False
        self.pending: list[str] = []
        self.taken: list[str] = []
        self.take_calls = 0

    def cancel(self) -> None:
        self._cancelled.set()

    def lose_lease(self) -> None:
        self._lease_lost = True

    def queue_input(self, text: str) -> None:
        with self._lock:
            self.pending.append(text)

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_lease(self) -> None:
        if self._lease_lost:
            raise LeaseLost("session lease lost")

    def take_boundary_inputs(self) -> list[str]:
        with self._lock:
            self.take_calls += 1
            taken, self.pending = self.pending, []
            self.taken.extend(taken)
            return taken


class MemoryTrace:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def trace(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(copy.deepcopy(event))

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


class NullTrace:
    def trace(self, event: dict[str, Any]) -> None:
        return None
