"""Domain errors. Services raise these; one API exception handler renders them as
``{"error": {"code", "message", "details"}}`` with the status they carry."""

from __future__ import annotations

from typing import Any


class LashOpsError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class NotFound(LashOpsError):
    status = 404
    code = "not_found"


class Conflict(LashOpsError):
    status = 409
    code = "conflict"


class InvalidInput(LashOpsError):
    status = 422
    code = "validation_error"


class LeaseHeld(Conflict):
    code = "already_held"

    def __init__(self, message: str, *, holder: str, token: int) -> None:
        super().__init__(message, details={"holder": holder, "token": token})
        self.holder = holder
        self.token = token


class LeaseLost(Conflict):
    """A write was attempted under a fencing token that is no longer current."""

    code = "lease_lost"


class TicketRefused(LashOpsError):
    """A WebSocket ticket that cannot open a socket (unknown, used, expired, or its key revoked)."""

    status = 401
    code = "ticket_invalid"
