"""The Celery app. ``celery -A lashops worker`` / ``celery -A lashops beat`` start against
``CELERY_BROKER_URL``. Without a broker the platform uses its in-process driver instead
(lashops.core.runner), and this app is only used by the CLI.

Task names: ``lashops.<area>.<noun>_<verb>`` (area: core, sessions, processes, mobs), the noun
left out where it is the area's own (``lashops.processes.drive``). Periodic tasks are the ones
whose verb is ``sweep`` or ``prune``; the beat schedule (``CELERY_BEAT_SCHEDULE`` in settings)
runs exactly those."""

import os
from collections.abc import Callable
from typing import Any

from celery import Celery, shared_task

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")

app = Celery("lashops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def task(*, name: str, formerly: str = "") -> Callable[[Callable[..., Any]], Any]:
    """``shared_task(name=name)``. ``formerly`` registers the name the task had before it was
    renamed as a second task running the same function, so messages queued under the old name
    before an upgrade are still consumed (kept for one release, then dropped)."""

    def decorate(fun: Callable[..., Any]) -> Any:
        if formerly:
            shared_task(name=formerly)(fun)
        return shared_task(name=name)(fun)

    return decorate
