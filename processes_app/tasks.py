"""Celery tasks for processes. Thin: they call the engine and services, take ids and are
idempotent (a re-delivered drive finds the rows leased or finished and does nothing)."""

from __future__ import annotations

from lashops.celery import task
from processes_app import engine, services


@task(name="lashops.processes.drive")
def process_drive_task(*, process_ids: list[str] | None = None) -> int:
    """Claim and run these processes, then any other runnable ones (one wake-up, many runs)."""
    return engine.drive(process_ids=process_ids)


@task(name="lashops.processes.sweep")
def process_sweep_task() -> dict[str, int]:
    return services.process_sweep()


@task(name="lashops.processes.prune")
def process_prune_task() -> int:
    return services.processes_prune()
