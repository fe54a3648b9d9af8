from django.apps import AppConfig


class MobsAppConfig(AppConfig):
    name = "mobs_app"
    verbose_name = "Mobs"
