"""Process errors: the domain errors of the services (subclasses of the platform errors, so the
one API handler renders them) and the exceptions the engine and a running definition raise to
each other (never rendered: they stop, park or fail a run)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lashops.core.errors import Conflict

__all__ = [
    "CancelRequested",
    "CompletionConflict",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "LeaseGone",
    "NotExternallyOwned",
    "Park",
    "ProcessFinished",
    "RegistrationConflict",
    "ReplayMismatch",
]

# --- domain errors (services) ------------------------------------------------------------


class ProcessFinished(Conflict):
    code = "process_finished"


class RegistrationConflict(Conflict):
    code = "registration_conflict"


class NotExternallyOwned(Conflict):
    code = "not_externally_owned"


class CompletionConflict(Conflict):
    code = "completion_conflict"


class DeadlineExceeded(Conflict):
    code = "deadline_exceeded"


# --- run control (engine and context) ----------------------------------------------------


class Park(Exception):
    """Raised inside a definition to park the process until ``wait_*`` is satisfied."""

    def __init__(
        self,
        *,
        wait_kind: str,
        until: datetime | None = None,
        signal: str = "",
        child: str = "",
        ready: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(wait_kind)
        self.wait_kind = wait_kind
        self.until = until
        self.signal = signal
        self.child = child
        self.ready = ready  # re-checked under the process row lock: True means do not park


class CancelRequested(Exception):
    pass


class LeaseGone(Exception):
    """This run no longer holds the lease: stop without writing anything."""


class DatabaseUnavailable(Exception):
    """The engine's own read or write could not reach the database: the run stops where it is,
    records nothing (no definition failure), and the process is re-claimed once it is back."""


class ReplayMismatch(Exception):
    def __init__(self, ordinal: int, expected: tuple[str, str], got: tuple[str, str]) -> None:
        super().__init__(
            f"replay diverged at operation {ordinal}: the journal holds {expected[0]} {expected[1]!r}, "
            f"the definition now asks for {got[0]} {got[1]!r}"
        )
        self.ordinal = ordinal
        self.expected = expected
        self.got = got
