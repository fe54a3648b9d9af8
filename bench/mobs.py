"""Mob benchmark: lazy registration of 1,000 identities, background warming with concurrency 16
vs 1 (ratio), and ten parallel sends to a dormant identity (materializations).

Run: DEBUG=1 .venv/bin/python bench/mobs.py  (uses $DATABASE_URL; creates workspace bench-mobs-<pid>).
Member sessions are real sessions_app sessions unless LASHOPS_MOB_MEMBER_SESSIONS says otherwise."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from django.db import connection  # noqa: E402

from lashops.core.services import workspace_create  # noqa: E402
from mobs_app import services  # noqa: E402
from mobs_app.messaging import identity_send  # noqa: E402
from mobs_app.models import ConsoleFrame, Identity  # noqa: E402

TOML = """
[mob]
id = "{mob_id}"
[profiles.worker]
model = "scripted-1"
provider = "scripted"
[profiles.worker.tools]
comms = true
[limits]
max_sessions = 2000
"""


def roster(n: int) -> str:
    return "".join(f'\n[[roster]]\nkey = "member-{i}"\nprofile = "worker"\n' for i in range(n))


def main() -> None:
    workspace = workspace_create(slug=f"bench-mobs-{os.getpid()}")
    t0 = time.perf_counter()
    mob16 = services.mob_load(workspace=workspace, source=TOML.format(mob_id="warm16") + roster(1000)).mob
    services.mob_bootstrap(mob=mob16, mode="lazy")
    register = time.perf_counter() - t0
    print(f"lazy register 1000 identities: {register:.2f}s (sessions created: 0)")
    mob1 = services.mob_load(workspace=workspace, source=TOML.format(mob_id="warm1") + roster(1000)).mob

    timings = {}
    for mob, concurrency in ((mob16, 16), (mob1, 1)):
        t0 = time.perf_counter()
        outcome = services.mob_warm(mob=mob, concurrency=concurrency)
        timings[concurrency] = time.perf_counter() - t0
        print(f"warm 1000 with concurrency {concurrency}: {timings[concurrency]:.2f}s {outcome}")
    print(f"ratio (concurrency 1 / concurrency 16): {timings[1] / timings[16]:.2f}x")

    mob = services.mob_load(workspace=workspace, source=TOML.format(mob_id="sends") + roster(1)).mob
    threads = [
        threading.Thread(
            target=lambda i=i: (
                identity_send(mob=mob, key="member-0", text=f"m{i}", idempotency_key=f"k{i}"),
                connection.close(),
            )
        )
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and ConsoleFrame.objects.filter(mob=mob, status__in=["delivered", "completed"]).count() < 10
    ):
        time.sleep(0.05)
    delivered = ConsoleFrame.objects.filter(mob=mob, status__in=["delivered", "completed"]).count()
    materializations = Identity.objects.get(mob=mob, key="member-0").materializations
    print(f"10 parallel sends to a dormant identity: {materializations} materialization(s), {delivered} delivered")
    from lashops.core.runner import shutdown

    shutdown(wait=True)


if __name__ == "__main__":
    main()
