"""The process runner: claim runnable processes under a lease, run them, park or finish them.

One code path, two drivers: the Celery task ``lashops.processes.drive`` and the in-process
thread driver of the embedded default both call :func:`drive`. A drive claims up to a
batch of runnable rows (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, then a
conditional-UPDATE lease per row), runs them, and keeps claiming until nothing is left or
its time budget is spent, so one wake-up can drive many processes.

Every write made while running checks the process's fencing token under a row lock; a
run whose lease was lost or superseded stops without writing. A ``LeaseKeeper``
thread renews the leases this OS process holds.

One module per concept (each imports only the ones above it):

- ``dispatch``: wake a driver after commit (coalesced per transaction), or later for a timer;
- ``claims``: claiming under leases, the lease keeper, holder ids, the retry over an outage;
- ``completion``: the terminal write of a run, the group commit of a batch, ``terminate``;
- ``run``: ``drive`` (claim batches and run them), ``run_claim``, ``ProcessRun``, ``CancelWatch``.

Other modules and the tests import from here.
"""

from processes_app.engine.claims import (
    HOST,
    Claim,
    claim_one,
    claim_runnable,
    holder_id,
    holder_provably_gone,
    lock_process,
    release_claims,
)
from processes_app.engine.completion import Completions, finish, terminate
from processes_app.engine.dispatch import dispatch_drive, dispatch_drive_later
from processes_app.engine.run import CancelWatch, ProcessRun, drive, enqueue_wake, run_claim

__all__ = [
    "HOST",
    "CancelWatch",
    "Claim",
    "Completions",
    "ProcessRun",
    "claim_one",
    "claim_runnable",
    "dispatch_drive",
    "dispatch_drive_later",
    "drive",
    "enqueue_wake",
    "finish",
    "holder_id",
    "holder_provably_gone",
    "lock_process",
    "release_claims",
    "run_claim",
    "terminate",
]
