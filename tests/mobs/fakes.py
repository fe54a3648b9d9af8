"""A MemberSessions that records calls instead of running sessions: lets the mob tests count
materializations and deliveries without the session engine. Thread-safe; reset per test."""

from __future__ import annotations

import threading
import time
from typing import Any

_lock = threading.Lock()
calls: dict[str, list[Any]] = {"open": [], "deliver": [], "delete": []}
open_delay = 0.0
fail_for: set[str] = set()


def reset() -> None:
    global open_delay
    with _lock:
        for key in calls:
            calls[key].clear()
        fail_for.clear()
    open_delay = 0.0


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
