import os
import sys

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "lashops.core"
    label = "core"
    verbose_name = "Platform"

    def ready(self) -> None:
        from lashops.core import (
            admin_site,  # noqa: F401  (titles the admin site)
            worker_signals,  # noqa: F401  (Celery worker heartbeats)
        )

        if serving_asgi() and settings.LASHOPS_RUNNER == "in_process":
            from lashops.core import heartbeat
            from lashops.core.scheduler import ensure_started

            heartbeat.start(kind="in_process")
            ensure_started()


def serving_asgi() -> bool:
    """True in a process that serves HTTP (uvicorn or daphne, as a script or with ``python -m``,
    or runserver's serving child)."""
    program = os.path.basename(sys.argv[0])
    if program == "__main__.py":  # python -m <package>: name the package instead
        program = os.path.basename(os.path.dirname(sys.argv[0]))
    if program.startswith(("daphne", "uvicorn")):
        return True
    return (
        len(sys.argv) > 1
        and sys.argv[1] == "runserver"
        and bool(os.environ.get("RUN_MAIN") or "--noreload" in sys.argv)
    )
