from lashops.core.errors import Conflict, InvalidInput, NotFound


class SessionNotFound(NotFound):
    code = "session_not_found"


class TurnNotFound(NotFound):
    code = "turn_not_found"


class InputNotFound(NotFound):
    """No input under that source key in the session (404 ``not_found``)."""


class SessionBusy(Conflict):
    code = "session_execution_busy"


class SessionClosed(Conflict):
    code = "session_closed"


class SessionConflict(Conflict):
    code = "session_conflict"


class CommitConflict(Conflict):
    code = "commit_conflict"


class TurnFinished(Conflict):
    code = "turn_already_committed"


class InvalidTurnInput(InvalidInput):
    code = "invalid_input"
