"""Writes for sessions, one module per concept (the way Zulip splits ``actions/``):

- ``sessions``: open (idempotent by id), park/close, delete;
- ``admission``: check a turn's input, claim the session's lane, create the turn;
- ``turns``: start, drive (under the session lease), cancel, child turns, the stranded-turn sweep;
- ``commit``: ``turn_commit``, a turn landing in one transaction, as named steps;
- ``inputs``: queued input and session commands;
- ``attachments``: blobs by content hash, held by sessions;
- ``common``: holder ids, event subjects, the guard over open turns.

Other apps and the tests import from here; the names below are the package's public surface
(``_admit`` and ``_transcript`` are used by tests that stage a turn by hand).
"""

from sessions_app.services.admission import _admit
from sessions_app.services.attachments import StoredAttachment, attachment_delete, attachment_put
from sessions_app.services.commit import turn_commit
from sessions_app.services.common import driver_id
from sessions_app.services.inputs import command_submit, input_cancel, input_enqueue
from sessions_app.services.sessions import (
    default_model,
    session_delete,
    session_delete_reporter_register,
    session_open,
    session_set_status,
)
from sessions_app.services.turns import _transcript, child_turn_run, turn_cancel, turn_drive, turn_start, turns_sweep

__all__ = [
    "StoredAttachment",
    "_admit",
    "_transcript",
    "attachment_delete",
    "attachment_put",
    "child_turn_run",
    "command_submit",
    "default_model",
    "driver_id",
    "input_cancel",
    "input_enqueue",
    "session_delete",
    "session_delete_reporter_register",
    "session_open",
    "session_set_status",
    "turn_cancel",
    "turn_commit",
    "turn_drive",
    "turn_start",
    "turns_sweep",
]
