from django.apps import AppConfig


class ProcessesAppConfig(AppConfig):
    name = "processes_app"
    verbose_name = "Processes"
