"""Mob definitions in TOML: parse, validate and normalise, reporting every problem at once with
its TOML path and line. No Django here: the result is plain data the services store.

Supported: ``[mob]``, ``[models.*]``, ``[profiles.*]`` (+ ``.tools``), ``[wiring]``, ``[topology]``,
``[skills.*]``, ``[limits]``, ``[[roster]]``. Sections mobkit has that we do not support yet
(``[flows]``, ``[backend]``, ...) are refused by name rather than silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

MOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RUNTIME_MODES = ("turn_driven", "autonomous_host")
ADDRESSABILITY = ("addressable", "internal_only")
TOOL_FLAGS = ("builtins", "shell", "comms", "memory", "mob", "image_generation")
TOPOLOGY_MODES = ("advisory", "strict")
DEFAULT_MAX_SESSIONS = 64

UNSUPPORTED_SECTIONS = ("flows", "backend", "supervisor", "spawn_policy", "event_router")
UNSUPPORTED_PROFILE_KEYS = (
    "self_hosted_server_id",
    "auto_compact_threshold",
    "resume_overrides",
    "backend",
    "max_inline_peer_notifications",
    "output_schema",
    "provider_params",
    "realm_profile",
)
UNSUPPORTED_TOOL_KEYS = ("workgraph", "schedule", "read_only", "mcp", "mcp_servers", "rust_bundles", "deny")
LIMIT_KEYS = (
    "max_sessions",
    "max_flow_duration_ms",
    "max_step_retries",
    "max_orphaned_turns",
    "cancel_grace_timeout_ms",
    "max_active_nodes",
    "max_active_frames",
    "max_frame_depth",
)
TOP_LEVEL_KEYS = (
    "image_generation_provider",
    "mob",
    "models",
    "profiles",
    "wiring",
    "topology",
    "skills",
    "limits",
    "roster",
)
MODEL_KEYS = (
    "provider",
    "display_name",
    "context_window",
    "max_output_tokens",
    "vision",
    "web_search",
    "call_timeout_secs",
)
PROFILE_KEYS = (
    "model",
    "provider",
    "runtime_mode",
    "peer_description",
    "skills",
    "external_addressable",
    "tools",
    "image_generation_provider",
)
ROSTER_KEYS = ("key", "profile", "addressability", "display_name", "labels", "context", "initial_message")


def identity_key_problem(key: Any) -> str | None:
    """Why ``key`` is not a valid identity key (non-empty, no whitespace, no '/'), or None."""
    if not isinstance(key, str) or not key:
        return "an identity key must be a non-empty string"
    if any(ch.isspace() for ch in key):
        return "an identity key may not contain whitespace"
    if "/" in key:
        return "an identity key may not contain '/'"
    if len(key) > 150:
        return "an identity key may have at most 150 characters"
    return None


@dataclass
class ParsedDefinition:
    """A valid definition, normalised to plain data (``data`` is what gets stored)."""

    mob_id: str
    data: dict[str, Any]
    roster: list[dict[str, Any]] | None = None  # None: the TOML has no [roster]
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.data["profiles"]


# --- line numbers ---------------------------------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*")


def _split_key(text: str) -> list[str]:
    parts = re.findall(_KEY_PART, text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def locate_lines(source: str) -> dict[str, int]:
    """Map TOML paths (``profiles.a.tools.comms``, ``roster[2].key``) to the line defining them.
    Approximate but good enough to point a human at the right place."""
    lines: dict[str, int] = {}
    prefix = ""
    array_counts: dict[str, int] = {}
    depth = 0  # inside a multi-line array or inline table
    in_multiline = False
    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if in_multiline:
            if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                in_multiline = False
            continue
        if depth > 0:
            depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = ".".join(_split_key(line[2 : line.find("]]")]))
            index = array_counts.get(name, 0)
            array_counts[name] = index + 1
            prefix = f"{name}[{index}]"
            lines.setdefault(name, number)
            lines.setdefault(prefix, number)
            continue
        if line.startswith("["):
            parts = _split_key(line[1 : line.find("]")])
            prefix = ".".join(parts)
            for end in range(1, len(parts) + 1):
                lines.setdefault(".".join(parts[:end]), number)
            continue
        match = _DOTTED.match(line)
        if match and line[match.end() : match.end() + 1] == "=":
            key = ".".join(_split_key(match.group(1)))
            path = f"{prefix}.{key}" if prefix else key
            lines.setdefault(path, number)
            value = line[match.end() + 1 :].strip()
            if value.startswith(('"""', "'''")) and value.count(value[:3]) == 1:
                in_multiline = True
            opened = value.count("[") + value.count("{") - value.count("]") - value.count("}")
            if opened > 0:
                depth = opened
    return lines


def line_of(lines: dict[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


# --- validation -----------------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str) -> None:
        self.lines = locate_lines(source)
        self.problems: list[dict[str, Any]] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append({"path": path, "line": line_of(self.lines, path), "message": message})

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(path, "must be a table")
            return {}
        return value

    def keys(self, table: dict[str, Any], path: str, allowed: tuple[str, ...], unsupported: tuple[str, ...] = ()):
        for key in table:
            if key in unsupported:
                self.add(f"{path}.{key}", f"'{key}' is not supported yet by LashOps")
            elif key not in allowed:
                self.add(f"{path}.{key}", f"unknown key '{key}' (allowed: {', '.join(allowed)})")

    def string(self, table: dict, key: str, path: str, *, required: bool = False, default: str = "") -> str:
        value = table.get(key)
        if value is None:
            if required:
                self.add(f"{path}.{key}", f"'{key}' is required")
            return default
        if not isinstance(value, str):
            self.add(f"{path}.{key}", "must be a string")
            return default
        return value

    def boolean(self, table: dict, key: str, path: str, default: bool = False) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(f"{path}.{key}", "must be true or false")
            return default
        return value

    def integer(self, table: dict, key: str, path: str, *, minimum: int = 0) -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{path}.{key}", "must be an integer")
            return None
        if value < minimum:
            self.add(f"{path}.{key}", f"must be at least {minimum} (got {value})")
            return None
        return value

    def choice(self, table: dict, key: str, path: str, choices: tuple[str, ...], default: str) -> str:
        value = table.get(key, default)
        if value not in choices:
            self.add(f"{path}.{key}", f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> dict[str, Any]:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else None
    return {"path": "", "line": line, "message": f"TOML syntax error: {message}"}


def parse_definition(source: str) -> ParsedDefinition:
    """Parse and validate a TOML mob definition. Raises ``DefinitionInvalid`` listing every problem.

    One function per section, called in the order the problems are reported in; a section that
    refers to another (a profile's skills, the orchestrator, wiring, topology, roster profiles)
    is read after it."""
    from mobs_app.errors import DefinitionInvalid

    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionInvalid([_syntax_problem(exc)]) from None
    c = _Checker(source)
    _check_top_level(c, raw)
    image_provider = c.string(raw, "image_generation_provider", "")
    skills = _parse_skills(c, raw)
    models = _parse_models(c, raw)
    profiles = _parse_profiles(c, raw, skills=skills, models=models, image_provider=image_provider)
    mob, mob_id, orchestrator = _parse_mob(c, raw, profiles)
    wiring = _parse_wiring(c, raw, profiles, orchestrator=orchestrator)
    topology = _parse_topology(c, raw, profiles)
    limits = _parse_limits(c, raw)
    roster = _parse_roster(c, raw, profiles)
    if c.problems:
        raise DefinitionInvalid(c.problems)
    data = {
        "mob": {"id": mob_id, "orchestrator": orchestrator or "", "description": mob.get("description", "")},
        "image_generation_provider": image_provider,
        "models": models,
        "profiles": profiles,
        "wiring": wiring,
        "topology": topology,
        "skills": skills,
        "limits": limits,
    }
    return ParsedDefinition(mob_id=mob_id, data=data, roster=roster)


def _check_top_level(c: _Checker, raw: dict[str, Any]) -> None:
    """Top-level keys: refuse sections we do not support by name, and unknown ones."""
    for key in raw:
        if key in UNSUPPORTED_SECTIONS:
            c.add(key, f"[{key}] is not supported yet by LashOps; remove the section")
        elif key not in TOP_LEVEL_KEYS:
            c.add(key, f"unknown section or key '{key}'")


def _parse_skills(c: _Checker, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[skills.<name>]``: inline skills (content and description)."""
    skills: dict[str, dict[str, Any]] = {}
    for name, spec in c.table(raw.get("skills", {}), "skills").items():
        path = f"skills.{name}"
        spec = c.table(spec, path)
        c.keys(spec, path, ("source", "content", "path", "description"))
        source_kind = c.choice(spec, "source", path, ("inline", "path"), "inline")
        if source_kind == "path":
            c.add(f"{path}.source", 'skills from a path are not supported yet; use source = "inline" with content')
        content = c.string(spec, "content", path, required=source_kind == "inline")
        skills[name] = {"source": "inline", "content": content, "description": c.string(spec, "description", path)}
    return skills


def _parse_models(c: _Checker, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[models.<name>]``: a model's provider and capabilities."""
    models: dict[str, dict[str, Any]] = {}
    for name, spec in c.table(raw.get("models", {}), "models").items():
        path = f"models.{name}"
        spec = c.table(spec, path)
        c.keys(spec, path, MODEL_KEYS)
        models[name] = {
            "provider": c.string(spec, "provider", path, required=True),
            "display_name": c.string(spec, "display_name", path),
            "context_window": c.integer(spec, "context_window", path, minimum=1),
            "max_output_tokens": c.integer(spec, "max_output_tokens", path, minimum=1),
            "vision": c.boolean(spec, "vision", path),
            "web_search": c.boolean(spec, "web_search", path),
            "call_timeout_secs": c.integer(spec, "call_timeout_secs", path, minimum=1),
        }
    return models


def _parse_profiles(
    c: _Checker,
    raw: dict[str, Any],
    *,
    skills: dict[str, dict[str, Any]],
    models: dict[str, dict[str, Any]],
    image_provider: str,
) -> dict[str, dict[str, Any]]:
    """``[profiles.<name>]`` (+ ``.tools``): at least one; skills must be declared, the provider
    defaults to the model's, the image provider to the mob's."""
    profiles: dict[str, dict[str, Any]] = {}
    raw_profiles = c.table(raw.get("profiles", {}), "profiles")
    if not raw_profiles:
        c.add("profiles", "a mob needs at least one [profiles.<name>]")
    for name, spec in raw_profiles.items():
        path = f"profiles.{name}"
        if not NAME_RE.match(name):
            c.add(path, "a profile name uses letters, digits, '_', '.', '-' (at most 63)")
        spec = c.table(spec, path)
        c.keys(spec, path, PROFILE_KEYS, UNSUPPORTED_PROFILE_KEYS)
        model = c.string(spec, "model", path, required=True)
        provider = c.string(spec, "provider", path) or models.get(model, {}).get("provider", "")
        skill_names = _profile_skills(c, spec, path, skills)
        tools_raw = c.table(spec.get("tools", {}), f"{path}.tools")
        c.keys(tools_raw, f"{path}.tools", TOOL_FLAGS, UNSUPPORTED_TOOL_KEYS)
        tools = {flag: c.boolean(tools_raw, flag, f"{path}.tools", default=False) for flag in TOOL_FLAGS}
        profiles[name] = {
            "model": model,
            "provider": provider,
            "runtime_mode": c.choice(spec, "runtime_mode", path, RUNTIME_MODES, "turn_driven"),
            "peer_description": c.string(spec, "peer_description", path),
            "skills": skill_names,
            "external_addressable": c.boolean(spec, "external_addressable", path),
            "tools": tools,
            "image_generation_provider": c.string(spec, "image_generation_provider", path) or image_provider,
        }
    return profiles


def _profile_skills(c: _Checker, spec: dict[str, Any], path: str, skills: dict[str, dict[str, Any]]) -> list[str]:
    """A profile's ``skills``: a list of names, each with its ``[skills.<name>]``."""
    skill_names = spec.get("skills", [])
    if not isinstance(skill_names, list) or not all(isinstance(s, str) for s in skill_names):
        c.add(f"{path}.skills", "must be a list of skill names")
        skill_names = []
    for i, skill in enumerate(skill_names):
        if skill not in skills:
            c.add(f"{path}.skills", f"skills[{i}] names '{skill}', which has no [skills.{skill}]")
    return skill_names


def _parse_mob(
    c: _Checker, raw: dict[str, Any], profiles: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], str, str | None]:
    """``[mob]``: required, with an id; the orchestrator (a profile name or ``{ profile = ... }``)
    must name a profile. Returns the table, the id and the orchestrator."""
    mob = c.table(raw.get("mob"), "mob") if "mob" in raw else {}
    if "mob" not in raw:
        c.add("mob", "[mob] with an id is required")
    c.keys(mob, "mob", ("id", "orchestrator", "description"))
    mob_id = c.string(mob, "id", "mob", required="mob" in raw)
    if mob_id and not MOB_ID_RE.match(mob_id):
        c.add("mob.id", "use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    orchestrator = mob.get("orchestrator")
    if isinstance(orchestrator, dict):
        c.keys(orchestrator, "mob.orchestrator", ("profile",))
        orchestrator = orchestrator.get("profile")
    if orchestrator is not None:
        if not isinstance(orchestrator, str):
            c.add("mob.orchestrator", 'must be a profile name or { profile = "..." }')
            orchestrator = None
        elif orchestrator not in profiles:
            c.add("mob.orchestrator", f"names profile '{orchestrator}', which has no [profiles.{orchestrator}]")
    return mob, mob_id, orchestrator


def _parse_wiring(
    c: _Checker, raw: dict[str, Any], profiles: dict[str, dict[str, Any]], *, orchestrator: str | None
) -> dict[str, Any]:
    """``[wiring]``: ``[[wiring.role_wiring]]`` pairs of profiles, and ``auto_wire_orchestrator``
    (which needs an orchestrator)."""
    wiring_raw = c.table(raw.get("wiring", {}), "wiring")
    c.keys(wiring_raw, "wiring", ("auto_wire_orchestrator", "role_wiring"))
    role_wiring: list[dict[str, str]] = []
    rules = wiring_raw.get("role_wiring", [])
    if not isinstance(rules, list):
        c.add("wiring.role_wiring", "must be an array of tables [[wiring.role_wiring]] with a and b")
        rules = []
    for i, rule in enumerate(rules):
        path = f"wiring.role_wiring[{i}]"
        rule = c.table(rule, path)
        c.keys(rule, path, ("a", "b"))
        a, b = c.string(rule, "a", path, required=True), c.string(rule, "b", path, required=True)
        for end, value in (("a", a), ("b", b)):
            if value and value not in profiles:
                c.add(f"{path}.{end}", f"names profile '{value}', which has no [profiles.{value}]")
        role_wiring.append({"a": a, "b": b})
    auto_wire = c.boolean(wiring_raw, "auto_wire_orchestrator", "wiring")
    if auto_wire and not orchestrator:
        c.add("wiring.auto_wire_orchestrator", "needs [mob] orchestrator")
    return {"auto_wire_orchestrator": auto_wire, "role_wiring": role_wiring}


def _parse_topology(c: _Checker, raw: dict[str, Any], profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``[topology]``: the mode and ``rules`` between profiles (``*`` for any)."""
    topo_raw = c.table(raw.get("topology", {}), "topology")
    c.keys(topo_raw, "topology", ("mode", "rules"))
    # Read before the problems are counted: read later, a bad mode was reported to no one.
    topology_mode = c.choice(topo_raw, "mode", "topology", TOPOLOGY_MODES, "advisory")
    topo_rules: list[dict[str, Any]] = []
    raw_rules = topo_raw.get("rules", [])
    if not isinstance(raw_rules, list):
        c.add("topology.rules", "must be a list of { from_role, to_role, allowed }")
        raw_rules = []
    for i, rule in enumerate(raw_rules):
        path = f"topology.rules[{i}]"
        rule = c.table(rule, path)
        c.keys(rule, path, ("from_role", "to_role", "allowed"))
        from_role = c.string(rule, "from_role", path, required=True)
        to_role = c.string(rule, "to_role", path, required=True)
        for end, value in (("from_role", from_role), ("to_role", to_role)):
            if value and value != "*" and value not in profiles:
                c.add(f"{path}.{end}", f"names profile '{value}', which has no [profiles.{value}]")
        topo_rules.append({"from_role": from_role, "to_role": to_role, "allowed": c.boolean(rule, "allowed", path)})
    return {"mode": topology_mode, "rules": topo_rules}


def _parse_limits(c: _Checker, raw: dict[str, Any]) -> dict[str, int | None]:
    """``[limits]``: non-negative integers; ``max_sessions`` at least 1."""
    limits_raw = c.table(raw.get("limits", {}), "limits")
    c.keys(limits_raw, "limits", LIMIT_KEYS)
    limits: dict[str, int | None] = {}
    for key in LIMIT_KEYS:
        if key not in limits_raw:
            continue
        if key == "max_sessions" and limits_raw[key] == 0:
            c.add("limits.max_sessions", "max_sessions must be greater than 0 (0 would admit no member sessions)")
            continue
        limits[key] = c.integer(limits_raw, key, "limits", minimum=1 if key == "max_sessions" else 0)
    return limits


def _parse_roster(c: _Checker, raw: dict[str, Any], profiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``[[roster]]``: the declared identities (None when the TOML has no roster)."""
    if "roster" not in raw:
        return None
    roster: list[dict[str, Any]] = []
    entries = raw["roster"]
    if not isinstance(entries, list):
        c.add("roster", "must be an array of tables [[roster]]")
        entries = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        roster.append(_parse_roster_entry(c, entry, f"roster[{i}]", i, profiles, seen))
    return roster


def _parse_roster_entry(
    c: _Checker, entry: Any, path: str, index: int, profiles: dict[str, dict[str, Any]], seen: dict[str, int]
) -> dict[str, Any]:
    """One ``[[roster]]`` entry: a unique valid key, a profile that can spawn members (tools.comms),
    labels (a table of strings) and context (a table). ``seen`` maps keys to their first index."""
    entry = c.table(entry, path)
    c.keys(entry, path, ROSTER_KEYS)
    key = entry.get("key")
    problem = identity_key_problem(key)
    if problem:
        c.add(f"{path}.key", problem)
    elif key in seen:
        c.add(f"{path}.key", f"identity '{key}' is already declared at roster[{seen[key]}]")
    else:
        seen[key] = index
    profile = c.string(entry, "profile", path, required=True)
    if profile and profile not in profiles:
        c.add(f"{path}.profile", f"names profile '{profile}', which has no [profiles.{profile}]")
    elif profile and not profiles[profile]["tools"]["comms"]:
        c.add(f"{path}.profile", f"profile '{profile}' lacks tools.comms = true, so it cannot spawn members")
    labels = entry.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        c.add(f"{path}.labels", "must be a table of strings")
        labels = {}
    context = entry.get("context", {})
    if not isinstance(context, dict):
        c.add(f"{path}.context", "must be a table")
        context = {}
    return {
        "key": key if isinstance(key, str) else "",
        "profile": profile,
        "addressability": c.choice(entry, "addressability", path, ADDRESSABILITY, "addressable"),
        "display_name": c.string(entry, "display_name", path),
        "labels": labels,
        "context": context,
        "initial_message": c.string(entry, "initial_message", path),
    }


def max_sessions_of(data: dict[str, Any], default: int = DEFAULT_MAX_SESSIONS) -> int:
    return data.get("limits", {}).get("max_sessions") or default
