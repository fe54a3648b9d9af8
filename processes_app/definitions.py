"""Process definitions: durable Python functions registered by name.

::

    @process_definition("orders.approve", version=1, signals={"approve": {"type": "object"}})
    def approve(ctx: ProcessContext, input: dict) -> dict:
        order = ctx.step("load", load_order, input["order_id"])
        ctx.sleep(2)
        decision = ctx.wait_signal("approve", timeout=3600)
        return {"order": order, "decision": decision}

A definition must be deterministic apart from what it does through ``ctx``: on resume it is
re-run from the top and every journaled operation returns its recorded result.

Definitions are discovered from the built-in examples and from the dotted module paths in
``LASHOPS_PROCESS_DEFINITIONS`` (imported once, at app start).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings

from lashops.core.errors import InvalidInput

DefinitionFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class ProcessDefinition:
    name: str
    version: int
    fn: DefinitionFn
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


_registry: dict[str, ProcessDefinition] = {}
_loaded = False
_load_lock = threading.Lock()


def process_definition(
    name: str, *, version: int = 1, signals: dict[str, dict[str, Any]] | None = None, description: str = ""
) -> Callable[[DefinitionFn], DefinitionFn]:
    """Register ``fn(ctx, input)`` as the process definition ``name``. ``signals`` maps each
    signal the process accepts to the JSON schema of its payload."""
    if not name or "/" in name:
        raise ValueError(f"invalid process definition name {name!r}")
    for schema in (signals or {}).values():
        jsonschema.Draft202012Validator.check_schema(schema)

    def register(fn: DefinitionFn) -> DefinitionFn:
        _registry[name] = ProcessDefinition(
            name=name, version=version, fn=fn, signals=dict(signals or {}), description=description or fn.__doc__ or ""
        )
        return fn

    return register


def load_definitions() -> None:
    """Import the built-in examples and every module in ``LASHOPS_PROCESS_DEFINITIONS``."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        importlib.import_module("processes_app.examples")
        for path in settings.LASHOPS_PROCESS_DEFINITIONS:
            importlib.import_module(path)
        _loaded = True


def get_definition(name: str) -> ProcessDefinition | None:
    load_definitions()
    return _registry.get(name)


def require_definition(name: str) -> ProcessDefinition:
    definition = get_definition(name)
    if definition is None:
        raise InvalidInput(
            f"no process definition named {name!r}",
            code="unknown_definition",
            details={"known": sorted(_registry)},
        )
    return definition


def all_definitions() -> list[ProcessDefinition]:
    load_definitions()
    return sorted(_registry.values(), key=lambda d: d.name)


def validate_signal(definition: ProcessDefinition | None, name: str, payload: Any) -> None:
    """Raise ``InvalidInput`` (422) for an undeclared signal or a payload its schema rejects."""
    if definition is None or name not in definition.signals:
        declared = sorted(definition.signals) if definition else []
        raise InvalidInput(
            f"process does not accept the signal {name!r}", code="unknown_signal", details={"declared": declared}
        )
    errors = sorted(
        jsonschema.Draft202012Validator(definition.signals[name]).iter_errors(payload), key=lambda e: list(e.path)
    )
    if errors:
        raise InvalidInput(
            f"payload of signal {name!r} does not match its schema",
            code="invalid_signal_payload",
            details=[{"path": "/".join(str(p) for p in e.path), "message": e.message} for e in errors],
        )
