from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "lashops.core"
    label = "core"
    verbose_name = "Platform"

    def ready(self) -> None:
        from lashops.core import admin_site  # noqa: F401  (titles the admin site)
