"""Real member sessions (``sessions_app``) whose opening takes a while: a slow session store. Lets
tests keep an operation inside its lease window, or a warm in progress, on any machine. The delay
is read at each call from ``LASHOPS_TEST_MEMBER_OPEN_DELAY`` (seconds; default 0.3), so a test and
the subprocesses it starts can each set their own."""

from __future__ import annotations

import os
import time

from mobs_app.members import SessionsAppMemberSessions

PATH = "tests.mobs.slow_sessions:SlowMemberSessions"


class SlowMemberSessions(SessionsAppMemberSessions):
    def open(self, *, workspace, session_id, spec, resume):
        time.sleep(float(os.environ.get("LASHOPS_TEST_MEMBER_OPEN_DELAY", "0.3")))
        return super().open(workspace=workspace, session_id=session_id, spec=spec, resume=resume)
