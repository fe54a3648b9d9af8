"""Writes for sessions, split by concept (see each module's docstring).

Other apps and the tests import from here; the names below are the package's public surface
(``_admit`` and ``_transcript`` are used by tests that stage a turn by hand).
"""

from sessions_app.services.turns import (
    StoredAttachment,
    _admit,
    _transcript,
    attachment_delete,
    attachment_put,
    child_turn_run,
    command_submit,
    default_model,
    driver_id,
    input_cancel,
    input_enqueue,
    session_delete,
    session_open,
    session_set_status,
    turn_cancel,
    turn_commit,
    turn_drive,
    turn_start,
    turns_sweep,
)

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
    "session_open",
    "session_set_status",
    "turn_cancel",
    "turn_commit",
    "turn_drive",
    "turn_start",
    "turns_sweep",
]
