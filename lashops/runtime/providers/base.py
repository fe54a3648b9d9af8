"""The provider contract every model backend implements.

A provider is synchronous: the turn machine runs on a worker thread (the in-process
runner or a Celery worker), and streams text through the ``on_text_delta`` callback as
it arrives. Retrying is the engine's job, not the provider's: a provider makes exactly
one attempt per ``complete`` call and raises :class:`ProviderError` with
``transient=True`` for what is worth retrying (429, 5xx, timeouts, connection errors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lashops.runtime.types import ModelRequest, ModelResponse

TextDeltaCallback = Callable[[str], None]


class ProviderError(Exception):
    """One failed model attempt. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


class Provider(Protocol):
    """A model backend. ``name`` is the registry key (``scripted``, ``openai``, ``anthropic``)."""

    name: str

    def complete(self, request: ModelRequest, *, on_text_delta: TextDeltaCallback) -> ModelResponse:
        """Run one streamed model call. Calls ``on_text_delta`` for each text chunk, in order,
        and returns the settled response (full text, tool calls with complete JSON arguments,
        usage). Raises ``ProviderError`` on failure; must honour ``request.parameters
        ["timeout"]`` (seconds) when given."""
        ...
