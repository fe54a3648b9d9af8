"""Mob domain errors: subclasses of the platform errors, so the one API handler renders them."""

from __future__ import annotations

from typing import Any

from lashops.core.errors import Conflict, InvalidInput, LashOpsError, LeaseHeld, LeaseLost, NotFound

__all__ = [
    "CapacityExceeded",
    "Conflict",
    "CursorAhead",
    "DefinitionInvalid",
    "IdempotencyConflict",
    "IdentityBusy",
    "InvalidInput",
    "LeaseHeld",
    "LeaseLost",
    "NotAddressable",
    "NotFound",
    "ReplayUnavailable",
    "ShuttingDown",
    "StaleCheckpointVersion",
    "StaleFencingToken",
    "TopologyDenied",
    "UnknownIdentity",
]


class DefinitionInvalid(InvalidInput):
    """A mob definition has problems; ``details`` lists every one with its TOML path and line."""

    code = "invalid_definition"

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        where = f" (line {first['line']})" if first.get("line") else ""
        more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        super().__init__(f"{first['path'] or 'definition'}: {first['message']}{where}{more}", details=problems)
        self.problems = problems


class UnknownIdentity(NotFound):
    code = "unknown_identity"


class IdentityBusy(LeaseHeld):
    """Another operation (another process, or another thread of this one) holds the identity's
    lease: 409 with the holder in ``details``. Nothing was changed; the caller may retry."""

    code = "identity_busy"


class NotAddressable(Conflict):
    code = "not_addressable"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class ShuttingDown(Conflict):
    code = "shutting_down"


class ReplayUnavailable(Conflict):
    """A console cursor that cannot be replayed (past the end): 409 with ``latest_cursor``."""

    code = "replay_unavailable"


class CapacityExceeded(Conflict):
    code = "max_sessions_reached"


class StaleFencingToken(LeaseLost):
    code = "stale_fencing_token"


class StaleCheckpointVersion(Conflict):
    code = "stale_checkpoint_version"


class TopologyDenied(Conflict):
    code = "topology_denied"


class CursorAhead(LashOpsError):
    """A ledger cursor past the end: explicit, never an empty page."""

    status = 410
    code = "event_query_stale"
