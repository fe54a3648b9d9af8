"""Configuration checks: what lash refuses at build time, as Django system checks."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


@register("lashops")
def runtime_configuration(app_configs: Any = None, **kwargs: Any) -> list:
    from lashops.runtime.plugins import load_plugin_factories
    from lashops.runtime.providers import PROVIDERS
    from lashops.runtime.tools import load_tool_providers
    from sessions_app.models import Session

    problems: list = []
    if not Session.Mode.values:
        problems.append(Error("No execution modes are installed.", id="lashops.E001"))
    elif Session.Mode.STANDARD not in Session.Mode.values:
        problems.append(Error("The default mode 'standard' is not installed.", id="lashops.E002"))
    provider, _, model = (settings.LASHOPS_DEFAULT_MODEL or "").partition(":")
    if not provider or not model:
        problems.append(
            Error(
                "No default model.",
                hint="Set LASHOPS_DEFAULT_MODEL to provider:model, e.g. scripted:scripted-1.",
                id="lashops.E003",
            )
        )
    elif provider not in PROVIDERS:
        problems.append(
            Error(
                f"LASHOPS_DEFAULT_MODEL names an unknown provider {provider!r}.",
                hint=f"one of {sorted(PROVIDERS)}",
                id="lashops.E004",
            )
        )
    try:
        load_tool_providers(settings.LASHOPS_TOOL_PROVIDERS)
    except Exception as exc:
        problems.append(Error(f"LASHOPS_TOOL_PROVIDERS cannot be loaded: {exc}", id="lashops.E005"))
    try:
        load_plugin_factories(settings.LASHOPS_PLUGINS)
    except Exception as exc:
        problems.append(Error(f"LASHOPS_PLUGINS cannot be loaded: {exc}", id="lashops.E006"))
    storage = settings.STORAGES.get("default", {}).get("BACKEND", "")
    database = settings.DATABASES["default"]["NAME"]
    if storage.endswith("InMemoryStorage") and str(database) != ":memory:":
        problems.append(
            Error(
                "Incoherent stores: sessions are durable (database) but attachments use in-memory storage.",
                hint="Use a durable STORAGES['default'] backend (FileSystemStorage, S3...).",
                id="lashops.E007",
            )
        )
    if settings.LASHOPS_RUNNER == "celery" and not getattr(settings, "REDIS_URL", None):
        problems.append(
            Warning(
                "Celery workers publish events, but the channel layer is in-memory: sockets served by other "
                "processes will not see live events (replay from the durable lane still works).",
                hint="Set REDIS_URL when CELERY_BROKER_URL is set.",
                id="lashops.W001",
            )
        )
    return problems
