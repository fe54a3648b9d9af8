"""A publishing OS process that keeps work flowing through an outage (as a Celery worker would):

    python -m tests.live.flow_publisher <workspace-slug> <count> <pause-ms>

Publishes ``count`` durable events, one transaction each, ``pause-ms`` apart: even ones for process
``p1`` (the processes stream and the fleet), odd ones for the fleet only. A live send that fails
(the channel layer is down) must be logged and never raise into the publish: the process exits 0
after printing ``published <count>``, or 1 with the traceback of a publish that raised."""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    slug, count, pause_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
    import django

    django.setup()
    from lashops.core import live
    from lashops.core.events import publish
    from lashops.core.models import Workspace

    workspace = Workspace.objects.get(slug=slug)
    for i in range(count):
        subject = {"process": "p1"} if i % 2 == 0 else {}
        publish(workspace=workspace, type="flow.tick", subject=subject, data={"i": i})
        if i % 50 == 0:
            print(f"at {i}", flush=True)
        time.sleep(pause_ms / 1000)
    live.flush(timeout=30)
    print(f"published {count}", flush=True)


if __name__ == "__main__":
    main()
