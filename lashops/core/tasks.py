"""Platform tasks. Thin: they call services."""

from __future__ import annotations

import os
import socket

from django.db import transaction

from lashops.celery import task
from lashops.core import event_types
from lashops.core.events import publish
from lashops.core.models import Workspace
from lashops.core.services import events_prune, workers_prune, workers_sweep


@task(name="lashops.core.events_prune")
def events_prune_task() -> int:
    return events_prune()


@task(name="lashops.core.workers_prune")
def workers_prune_task() -> int:
    return workers_prune()


@task(name="lashops.core.workers_sweep")
def workers_sweep_task() -> list[str]:
    return workers_sweep()


@task(name="lashops.core.runner_probe")
def runner_probe_task(*, workspace_id: int, probe_id: str) -> None:
    """Proves the runner round trip: publishes ``runner.probe_completed`` from wherever it ran."""
    workspace = Workspace.objects.get(pk=workspace_id)
    with transaction.atomic():
        publish(
            workspace=workspace,
            type=event_types.RUNNER_PROBE_COMPLETED,
            subject={"probe": probe_id},
            data={"host": socket.gethostname(), "pid": os.getpid()},
        )
