"""Which workspace a piece of shared runner state belongs to.

Workers and leases are process-wide: a worker runs every workspace's work, and a lease row names
its subject only by ``(scope, key)``. Before a workspace-scoped reader sees a worker's work in
flight or its leases, each item is mapped to its workspace here, and items of other workspaces
(or of none that can be named) are left out.

Core does not know the apps' tables, so each app registers, in its ``AppConfig.ready``, how its
lease scopes and task ids map to workspaces: a resolver takes a set of keys (or ids, as strings)
and answers ``{key: workspace_id}`` in one query. Mapping a batch costs one query per scope and
per id kind, never one per item. An item no resolver can place belongs to no workspace: only the
staff views of every workspace (the admin) show it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Resolver = Callable[[set[str]], dict[str, int]]

WORKSPACE_ID = "workspace_id"

_lease_scopes: dict[str, Resolver] = {}
# Registration order is the precedence when a work item carries several ids.
_work_ids: dict[str, Resolver] = {}


def register_lease_scope(scope: str, resolver: Resolver) -> None:
    """Map the keys of lease ``scope`` to workspaces with ``resolver`` (one query per call)."""
    _lease_scopes[scope] = resolver


def register_work_id(name: str, resolver: Resolver) -> None:
    """Map a task id named ``name`` (``turn_id``, ``process_id``, ...) to workspaces."""
    _work_ids[name] = resolver


def lease_workspaces(leases: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """The workspace id of each lease (``{"scope", "key", ...}``), ``None`` when unknown."""
    leases = list(leases)
    keys: dict[str, set[str]] = defaultdict(set)
    for lease in leases:
        keys[lease["scope"]].add(str(lease["key"]))
    owners = {scope: _resolve(_lease_scopes.get(scope), wanted) for scope, wanted in keys.items()}
    return [owners[lease["scope"]].get(str(lease["key"])) for lease in leases]


def work_workspaces(items: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """The workspace id of each in-flight work item (a heartbeat entry: task name plus the task's
    ids), ``None`` when none of its ids is known. An explicit ``workspace_id`` wins; otherwise the
    first id, in registration order, that has a resolver decides."""
    items = list(items)
    chosen: list[tuple[str, str] | None] = []
    wanted: dict[str, set[str]] = defaultdict(set)
    for item in items:
        pick = None
        for name in (WORKSPACE_ID, *_work_ids):
            if item.get(name) not in (None, ""):
                pick = (name, str(item[name]))
                break
        chosen.append(pick)
        if pick is not None and pick[0] != WORKSPACE_ID:
            wanted[pick[0]].add(pick[1])
    owners = {name: _resolve(_work_ids[name], ids) for name, ids in wanted.items()}
    result: list[int | None] = []
    for pick in chosen:
        if pick is None:
            result.append(None)
        elif pick[0] == WORKSPACE_ID:
            result.append(int(pick[1]) if pick[1].isdigit() else None)
        else:
            result.append(owners[pick[0]].get(pick[1]))
    return result


def _resolve(resolver: Resolver | None, keys: set[str]) -> dict[str, int]:
    return resolver(keys) if resolver is not None and keys else {}
