from __future__ import annotations

import pytest

import tests.processes.definitions  # noqa: F401  (registers the test definitions)


@pytest.fixture
def drive():
    """Run the driver in this thread until nothing is runnable (deterministic)."""
    from processes_app.engine import drive as engine_drive

    def run(process_ids: list[str] | None = None) -> int:
        total = 0
        while True:
            ran = engine_drive(process_ids=process_ids)
            total += ran
            if not ran:
                return total

    return run


@pytest.fixture
def make_due():
    """Move a parked process's journaled timers and its wait deadline into the past."""
    from datetime import timedelta

    from django.utils import timezone

    from lashops.core.models import Effect
    from processes_app.models import Process

    def run(process_id: str) -> None:
        past = timezone.now() - timedelta(seconds=1)
        for effect in Effect.objects.filter(scope=f"process:{process_id}"):
            if "until" in effect.outcome:
                effect.outcome = {**effect.outcome, "until": past.isoformat()}
                effect.save(update_fields=["outcome"])
        Process.objects.filter(pk=process_id, wait_until__isnull=False).update(wait_until=past)

    return run
