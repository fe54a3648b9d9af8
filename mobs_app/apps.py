from django.apps import AppConfig


class MobsAppConfig(AppConfig):
    name = "mobs_app"
    verbose_name = "Mobs"

    def ready(self) -> None:
        from mobs_app.receivers import record_member_checkpoint, record_member_reply
        from sessions_app.signals import turn_committed

        turn_committed.connect(record_member_checkpoint, dispatch_uid="mobs_app.record_member_checkpoint")
        turn_committed.connect(record_member_reply, dispatch_uid="mobs_app.record_member_reply")
