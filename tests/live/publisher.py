"""A publishing OS process for cross-process ordering tests:

    python -m tests.live.publisher <workspace-slug> <session-id> <tag> <count> <send-delay-ms> [<start-at>]

Publishes ``count`` durable events for the session, one transaction each, with a short pause
between them, from ``start-at`` (a ``time.time()`` value: publishers started together overlap
however long each took to start). ``send-delay-ms`` holds this process's live sends back by that long (in order, as a
slow network would), so another publisher's later cursors overtake its earlier ones."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time


def main() -> None:
    slug, session_id, tag, count, delay_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    start_at = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
    import django

    django.setup()
    from lashops.core import events, live
    from lashops.core.models import Workspace

    if delay_ms > 0:
        real_send = live.group_send
        pending: queue.Queue = queue.Queue()

        def slow_sender() -> None:
            while True:
                due, group, message = pending.get()
                time.sleep(max(0.0, due - time.monotonic()))
                real_send(group, message)
                pending.task_done()

        threading.Thread(target=slow_sender, daemon=True).start()
        events.live.group_send = lambda group, message: pending.put(
            (time.monotonic() + delay_ms / 1000, group, message)
        )
    workspace = Workspace.objects.get(slug=slug)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        events.publish(
            workspace=workspace, type="order.probe", subject={"session": session_id}, data={"tag": tag, "i": i}
        )
        time.sleep(0.003)
    if delay_ms > 0:
        pending.join()
    live.flush(timeout=30)
    print(f"{tag} published {count}", flush=True)


if __name__ == "__main__":
    main()
