from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Agent sessions"

    def ready(self) -> None:
        from lashops.core import tenancy
        from sessions_app import checks  # noqa: F401  (registers the configuration checks)
        from sessions_app.runtime_host import SESSION_LEASE_SCOPE
        from sessions_app.selectors import session_workspaces, turn_workspaces

        tenancy.register_lease_scope(SESSION_LEASE_SCOPE, session_workspaces)
        tenancy.register_work_id("session_id", session_workspaces)
        tenancy.register_work_id("turn_id", turn_workspaces)
