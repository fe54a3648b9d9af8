import os
import sys

from django.apps import AppConfig


class ProcessesAppConfig(AppConfig):
    name = "processes_app"
    verbose_name = "Processes"

    def ready(self) -> None:
        from processes_app.definitions import load_definitions

        load_definitions()
        serving = "daphne" in os.path.basename(sys.argv[0]) or (
            len(sys.argv) > 1
            and sys.argv[1] == "runserver"
            and (os.environ.get("RUN_MAIN") or "--noreload" in sys.argv)
        )
        if serving:
            from processes_app.scheduler import ensure_started

            ensure_started()
