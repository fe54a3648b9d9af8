from django.apps import AppConfig


class MobsAppConfig(AppConfig):
    name = "mobs_app"
    verbose_name = "Mobs"

    def ready(self) -> None:
        from lashops.core import tenancy
        from mobs_app import selectors
        from mobs_app.leases import SCOPE
        from mobs_app.receivers import member_turn_committed
        from sessions_app.signals import turn_committed

        turn_committed.connect(member_turn_committed, dispatch_uid="mobs_app.member_turn_committed")
        tenancy.register_lease_scope(SCOPE, selectors.identity_lease_workspaces)
        tenancy.register_work_id("mob_pk", selectors.mob_workspaces)
        tenancy.register_work_id("identity_pk", selectors.identity_workspaces)
        tenancy.register_work_id("frame_pk", selectors.console_frame_workspaces)
