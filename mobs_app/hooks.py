"""Session and lifecycle hooks named by dotted path in ``LASHOPS_MOB_HOOKS``:

* ``before_create(request: dict)``: may change ``model``, ``system_prompt``, ``labels`` before a
  member session is created; an exception fails that materialization;
* ``after_create(session_id, context)``, ``post_spawn(mob, identity, session_id)``,
  ``post_reconcile(mob, report)``, ``on_error(mob, category, identity, message)``: best effort,
  their exceptions are logged and swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

HOOK_NAMES = ("before_create", "after_create", "post_spawn", "post_reconcile", "on_error")


def _hooks(name: str) -> list[Any]:
    from lashops.runtime.tools import resolve_dotted_path

    paths = settings.LASHOPS_MOB_HOOKS.get(name, [])
    if isinstance(paths, str):
        paths = [paths]
    return [resolve_dotted_path(path) for path in paths]


def run_strict(name: str, *args: Any) -> None:
    for hook in _hooks(name):
        hook(*args)


def run(name: str, *args: Any) -> None:
    try:
        hooks = _hooks(name)
    except Exception:
        log.exception("mob hook %s cannot be loaded", name)
        return
    for hook in hooks:
        try:
            hook(*args)
        except Exception:
            log.exception("mob hook %s (%s) failed", name, getattr(hook, "__name__", hook))
