"""Peer topology: canonical edges, the edges declared by ``[wiring]``, and ``[topology]`` rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mobs_app.errors import InvalidInput


def canonical(a: str, b: str) -> tuple[str, str]:
    """An undirected edge as (low, high). Self edges and empty endpoints are refused."""
    if not a or not b:
        raise InvalidInput("an edge needs two non-empty endpoints", code="invalid_edge")
    if a == b:
        raise InvalidInput(f"self edge {a!r} is not allowed", code="invalid_edge")
    return (a, b) if a < b else (b, a)


def wiring_edges(definition: dict[str, Any], members: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges declared by ``[wiring]`` over ``members`` (key, profile), whatever order they came up in."""
    wiring = definition.get("wiring", {})
    orchestrator = definition.get("mob", {}).get("orchestrator", "")
    by_profile: dict[str, list[str]] = {}
    for key, profile in members:
        by_profile.setdefault(profile, []).append(key)
    edges: set[tuple[str, str]] = set()

    def connect(left: list[str], right: list[str]) -> None:
        for x in left:
            for y in right:
                if x != y:
                    edges.add(canonical(x, y))

    everyone = [key for keys in by_profile.values() for key in keys]
    if wiring.get("auto_wire_orchestrator") and orchestrator:
        connect(by_profile.get(orchestrator, []), everyone)
    for rule in wiring.get("role_wiring", []):
        connect(by_profile.get(rule["a"], []), by_profile.get(rule["b"], []))
    return edges


def topology_check(definition: dict[str, Any], from_profile: str, to_profile: str) -> tuple[bool, bool]:
    """(allowed, violation) for a peer message from one role to another. ``strict`` denies unless
    a rule allows; ``advisory`` always allows and reports a violation when rules exist and none
    allows it. The last matching rule wins; ``*`` matches any role."""
    topology = definition.get("topology", {})
    rules = topology.get("rules", [])
    verdict: bool | None = None
    for rule in rules:
        if rule["from_role"] in (from_profile, "*") and rule["to_role"] in (to_profile, "*"):
            verdict = bool(rule["allowed"])
    if topology.get("mode", "advisory") == "strict":
        return verdict is True, verdict is not True
    return True, bool(rules) and verdict is not True
