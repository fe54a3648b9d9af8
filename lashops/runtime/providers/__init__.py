"""Provider registry: a name in a session's model spec -> a provider instance.

Providers are imported lazily so the SDKs of unused vendors are never loaded.
API keys and base URLs come from the environment (never from a session, admin or API):
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` and ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping

from lashops.runtime.providers.base import Provider, ProviderError, TextDeltaCallback

__all__ = ["PROVIDERS", "Provider", "ProviderError", "TextDeltaCallback", "UnknownProvider", "build_provider"]

# name -> "module:factory"; the factory takes ``env`` (a mapping) and returns a Provider.
PROVIDERS: dict[str, str] = {
    "scripted": "lashops.runtime.providers.scripted:build",
    "openai": "lashops.runtime.providers.openai_compat:build",
    "anthropic": "lashops.runtime.providers.anthropic:build",
}


class UnknownProvider(LookupError):
    pass


def build_provider(name: str, *, env: Mapping[str, str] | None = None) -> Provider:
    """Build the provider registered under ``name`` with keys read from ``env``."""
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(f"unknown model provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    module_name, _, factory_name = target.partition(":")
    factory: Callable[..., Provider] = getattr(importlib.import_module(module_name), factory_name)
    return factory(env=os.environ if env is None else env)
