"""FlakyMemberSessions for an ASGI server in its own process (tests/live/server.py), where the test
cannot call ``fakes.fail_deliveries``: the server's first ``LASHOPS_TEST_FAIL_DELIVERIES``
deliveries fail, then it delivers like RecordingMemberSessions."""

from __future__ import annotations

import os
import threading

from tests.mobs import fakes

_armed = False
_lock = threading.Lock()


class EnvFlakyMemberSessions(fakes.FlakyMemberSessions):
    def __init__(self) -> None:
        global _armed
        with _lock:
            if not _armed:  # once per server process: member_sessions() builds one per call
                _armed = True
                fakes.fail_deliveries(int(os.environ.get("LASHOPS_TEST_FAIL_DELIVERIES", "0")))
