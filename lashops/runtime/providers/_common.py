"""Pieces shared by the HTTP-backed providers: secret redaction, error classification,
parameter splitting and the per-call deadline."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lashops.runtime.providers.base import ProviderError

DEFAULT_TIMEOUT_SECONDS = 600.0
# When a base URL points at a local server (vLLM, Ollama, llama.cpp) no key is needed, but the
# SDKs refuse to build a client without one.
PLACEHOLDER_API_KEY = "not-needed"


def _transport_exception_types() -> tuple[type[BaseException], ...]:
    """httpx transport errors, from whichever httpx the installed SDKs use (``httpx`` or ``httpx2``)."""
    found: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


TRANSPORT_ERRORS = _transport_exception_types()


def is_transient_status(status: int) -> bool:
    """429 and 5xx are worth retrying; 408 is a timeout reported by the server."""
    return status in (408, 429) or status >= 500


class Redactor:
    """Removes a secret from any text before it leaves the provider (messages, reprs)."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret if secret and secret != PLACEHOLDER_API_KEY else None

    def __call__(self, text: str) -> str:
        if self._secret and self._secret in text:
            return text.replace(self._secret, "[redacted]")
        return text

    def __repr__(self) -> str:
        return "Redactor()"


class Deadline:
    """The per-call wall-clock budget. The SDK timeout bounds each socket operation; this also
    bounds a server that trickles bytes so slowly that no single read ever times out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expires = time.monotonic() + seconds

    def check(self, provider: str) -> None:
        if time.monotonic() > self._expires:
            raise ProviderError(f"{provider}: response not finished within {self.seconds:g}s", transient=True)


def request_timeout(parameters: Mapping[str, Any]) -> float:
    value: Any = parameters.get("timeout")
    return DEFAULT_TIMEOUT_SECONDS if value in (None, "") else float(value)


def split_parameters(
    parameters: Mapping[str, Any], create: Callable[..., Any], reserved: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split pass-through parameters into keyword arguments the SDK's ``create`` knows and the rest,
    which go into ``extra_body`` (server-specific knobs such as vLLM's ``top_k``). ``timeout`` and
    the arguments the provider sets itself are never passed through."""
    known = set(inspect.signature(create).parameters)
    skip = {"timeout", "extra_body", "extra_headers", "extra_query", *reserved}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(parameters.get("extra_body") or {})
    for key, value in parameters.items():
        if key in skip:
            continue
        if key in known:
            kwargs[key] = value
        else:
            extra[key] = value
    return kwargs, extra
