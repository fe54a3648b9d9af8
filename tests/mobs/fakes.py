"""A MemberSessions that records calls instead of running sessions: lets the mob tests count
materializations and deliveries without the session engine. Thread-safe; reset per test."""

from __future__ import annotations

import threading
import time
from typing import Any

_lock = threading.Lock()
calls: dict[str, list[Any]] = {"open": [], "deliver": [], "delete": [], "deliver_failed": []}
open_delay = 0.0
fail_for: set[str] = set()
# FlakyMemberSessions: how many of the next deliveries raise, and what they raise.
deliver_failures = 0
deliver_error: BaseException = RuntimeError("member session unavailable")


def reset() -> None:
    global open_delay, deliver_failures, deliver_error
    with _lock:
        for key in calls:
            calls[key].clear()
        fail_for.clear()
    open_delay = 0.0
    deliver_failures = 0
    deliver_error = RuntimeError("member session unavailable")


def fail_deliveries(count: int, error: BaseException | None = None) -> None:
    """Make the next ``count`` deliveries of FlakyMemberSessions raise ``error``."""
    global deliver_failures, deliver_error
    with _lock:
        deliver_failures = count
        if error is not None:
            deliver_error = error


class RecordingMemberSessions:
    def open(self, *, workspace, session_id, spec, resume):
        if spec.identity in fail_for:
            raise RuntimeError(f"embodiment failed for {spec.identity}")
        if open_delay:
            time.sleep(open_delay)
        with _lock:
            calls["open"].append({"session_id": session_id, "identity": spec.identity, "resume": resume, "spec": spec})
        return session_id

    def deliver(self, *, workspace, session_id, text, source_key):
        with _lock:
            calls["deliver"].append({"session_id": session_id, "text": text, "source_key": source_key})

    def delete(self, *, workspace, session_id):
        with _lock:
            calls["delete"].append(session_id)


class FlakyMemberSessions(RecordingMemberSessions):
    """Fails the next ``fail_deliveries(n)`` deliveries (recorded in ``calls["deliver_failed"]``),
    then delivers like RecordingMemberSessions: a member session that is briefly unavailable."""

    def deliver(self, *, workspace, session_id, text, source_key):
        global deliver_failures
        with _lock:
            failing = deliver_failures > 0
            if failing:
                deliver_failures -= 1
                calls["deliver_failed"].append({"session_id": session_id, "source_key": source_key})
        if failing:
            raise deliver_error
        super().deliver(workspace=workspace, session_id=session_id, text=text, source_key=source_key)
