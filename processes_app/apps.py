import os
import sys

from django.apps import AppConfig


class ProcessesAppConfig(AppConfig):
    name = "processes_app"
    verbose_name = "Processes"

    def ready(self) -> None:
        from lashops.core import tenancy
        from processes_app.definitions import load_definitions
        from processes_app.selectors import LEASE_SCOPE, process_workspaces
        from processes_app.services import process_session_deleted
        from sessions_app.services import session_delete_reporter_register

        load_definitions()
        session_delete_reporter_register(name="process", reporter=process_session_deleted)
        tenancy.register_lease_scope(LEASE_SCOPE, process_workspaces)
        tenancy.register_work_id("process_id", process_workspaces)
        serving = "daphne" in os.path.basename(sys.argv[0]) or (
            len(sys.argv) > 1
            and sys.argv[1] == "runserver"
            and (os.environ.get("RUN_MAIN") or "--noreload" in sys.argv)
        )
        if serving:
            from processes_app.scheduler import ensure_started

            ensure_started()
