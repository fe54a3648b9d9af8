"""Every event type of the platform, in one place: the durable lane (stored with a cursor,
replayed) and the live lane (never stored). Emit sites use these names, never a literal.

Dotted ``<entity>.<what happened>``. docs/live-events.md and each area's doc say what the
data of each carries. Renaming one is a contract change for clients (see issue 11, item 6:
``session.open`` became ``session.resumed``).
"""

from __future__ import annotations

# The turn machine's own (emitted by lashops.runtime.turn), re-exported so this is the one list.
from lashops.runtime.event_types import *  # noqa: F403

# --- platform (lashops.core) ------------------------------------------------------------
API_KEY_CREATED = "api_key.created"
API_KEY_REVOKED = "api_key.revoked"
RUNNER_PROBE_REQUESTED = "runner.probe_requested"
RUNNER_PROBE_COMPLETED = "runner.probe_completed"
WORKER_STALE = "worker.stale"
WORKER_DEAD = "worker.dead"
WORKER_RECOVERED = "worker.recovered"
WORKER_HEARTBEAT = "worker.heartbeat"  # live only, on /ws/fleet/

# --- sessions (sessions_app) ------------------------------------------------------------
SESSION_OPENED = "session.opened"  # created (an open of an existing open session publishes nothing)
SESSION_RESUMED = "session.resumed"  # back to open from parked or closed (was session.open)
SESSION_PARKED = "session.parked"
SESSION_CLOSED = "session.closed"
SESSION_DELETED = "session.deleted"
# The event a session status change publishes, by the status it enters.
SESSION_STATUS_EVENT = {"open": SESSION_RESUMED, "parked": SESSION_PARKED, "closed": SESSION_CLOSED}
TURN_CANCEL_REQUESTED = "turn.cancel_requested"
TURN_COMMITTED = "turn.committed"
INPUT_QUEUED = "input.queued"
INPUT_CANCELLED = "input.cancelled"
COMMAND_APPLIED = "command.applied"
ATTACHMENT_ADDED = "attachment.added"

# --- processes (processes_app) ----------------------------------------------------------
# A process's log entries; on the workspace stream as process.* (processes_app.events.durable_type).
PROCESS_CREATED = "process.created"
PROCESS_STARTED = "process.started"
PROCESS_STEP_COMPLETED = "process.step_completed"  # process log only
PROCESS_WAITING = "process.waiting"
PROCESS_RESUMED = "process.resumed"
PROCESS_EMITTED = "process.emitted"
PROCESS_CHILD_STARTED = "process.child_started"
PROCESS_AGENT_TURN = "process.agent_turn"
PROCESS_HANDLE_REVOKED = "process.handle_revoked"
PROCESS_CANCEL_REQUESTED = "process.cancel_requested"
PROCESS_ABANDON_REQUESTED = "process.abandon_requested"
PROCESS_TERMINAL_PREFIX = "process."  # + the terminal status: completed, failed, cancelled, abandoned
SIGNAL_PREFIX = "signal."  # + the signal's name; process.signal.<name> on the workspace stream
TRIGGER_OCCURRED = "trigger.occurred"

# --- mobs (mobs_app) --------------------------------------------------------------------
IDENTITY_CHECKPOINTED = "identity.checkpointed"
CONSOLE_FRAME = "console.frame"
CONSOLE_FRAME_UPDATED = "console.frame_updated"
