"""Demo content. Each app adds its own example here as it lands."""

from __future__ import annotations

from lashops.core.models import Workspace


def seed_demo_content(*, workspace: Workspace) -> None:
    """Create the demo's example objects (idempotent)."""
    from sessions_app.demo import seed as seed_sessions

    seed_sessions(workspace=workspace)

    from processes_app.demo import seed as seed_processes

    seed_processes(workspace=workspace)

    from mobs_app.demo import seed as seed_mobs

    seed_mobs(workspace=workspace)
