"""The process runner (being split by concept; for now all of it is in ``run``).

Other modules and the tests import from here."""

from processes_app.engine.run import (
    HOST,
    CancelWatch,
    Claim,
    Completions,
    ProcessRun,
    claim_one,
    claim_runnable,
    dispatch_drive,
    drive,
    finish,
    holder_id,
    holder_provably_gone,
    lock_process,
    run_claim,
    terminate,
)

__all__ = [
    "HOST",
    "CancelWatch",
    "Claim",
    "Completions",
    "ProcessRun",
    "claim_one",
    "claim_runnable",
    "dispatch_drive",
    "drive",
    "finish",
    "holder_id",
    "holder_provably_gone",
    "lock_process",
    "run_claim",
    "terminate",
]
