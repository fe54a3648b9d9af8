"""The layers import only downwards, and the apps form no import cycle (issue 11, item 1).

    lashops.runtime (0) <- lashops.core (1) <- sessions_app (2) <- processes_app, mobs_app (3)

Every module of the layers is parsed (migrations skipped) and every import in it is checked:
module level, inside functions and under ``TYPE_CHECKING`` alike, since a function-local import
is still a dependency. processes_app and mobs_app are siblings: neither imports the other. The
project wiring (lashops/settings.py, urls.py, api.py, asgi.py, routing.py, env.py) sits above
every layer and may import anything; no layer imports it. The Celery app (``lashops`` and
``lashops.celery``: the ``task`` decorator every app's tasks.py uses) is importable from every
layer: it is checked as layer 0 and imports no layer itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {
    "lashops.runtime": 0,
    "lashops": 0,  # the package itself: re-exports the Celery app
    "lashops.celery": 0,
    "lashops.core": 1,
    "sessions_app": 2,
    "processes_app": 3,
    "mobs_app": 3,
    "lashops.ops": 3,  # the ops console pages (read sessions); checked as a target only
}
WIRING = 4  # any other lashops.* module: settings, urls, api, asgi, routing, env
SOURCES = ["lashops/runtime", "lashops/core", "sessions_app", "processes_app", "mobs_app", "lashops/__init__.py"]
SOURCES += ["lashops/celery.py"]

# Edges that exist and may not be removed here, each with its reason: (importing file, imported module).
ALLOWED = {
    # The demo seeder composes every app's demo content for the lashops_demo command: project
    # wiring that lives in lashops/core by location (function-local imports). Its place is
    # next to the wiring; moving it is for the owner of lashops/core.
    ("lashops/core/demo.py", "sessions_app.demo"),
    ("lashops/core/demo.py", "processes_app.demo"),
    ("lashops/core/demo.py", "mobs_app.demo"),
    # The admin templates' tag library lives in core's templatetags (lashops.ops is no installed
    # app, so it cannot hold one) and renders the ops console's panels (function-local imports).
    ("lashops/core/templatetags/lashops_ops.py", "lashops.ops.views"),
    ("lashops/core/templatetags/lashops_ops.py", "lashops.ops.selectors"),
}


def unit(module: str) -> str | None:
    """The layer unit a dotted module belongs to (None: not ours, e.g. django)."""
    parts = module.split(".")
    if parts[0] == "lashops":
        return "lashops" if len(parts) == 1 else f"lashops.{parts[1]}"
    return parts[0] if parts[0] in LAYERS else None


def layer(name: str) -> int:
    return LAYERS.get(name, WIRING)


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every absolute import in a module (module level and function level), as (line, module)."""
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[Path]:
    paths: list[Path] = []
    for source in SOURCES:
        base = ROOT / source
        found = [base] if base.is_file() else sorted(base.rglob("*.py"))
        paths += [p for p in found if "migrations" not in p.parts]
    return paths


def violations(path: Path, source: str | None = None) -> list[str]:
    """Imports of ``path`` that go up a layer or across to a sibling app."""
    own = unit(module_name(path))
    assert own is not None
    wrong = []
    for line, target in imports(path, source):
        other = unit(target)
        if other is None or other == own:
            continue
        if (path.relative_to(ROOT).as_posix(), target) in ALLOWED:
            continue
        if layer(other) > layer(own) or (layer(other) == layer(own) and layer(own) > 0):
            wrong.append(
                f"{path.relative_to(ROOT)}:{line} ({own}, layer {layer(own)}) imports {target} "
                f"({other}, layer {layer(other)})"
            )
    return wrong


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in modules():
        own = unit(module_name(path))
        assert own is not None
        for _, target in imports(path):
            other = unit(target)
            if other is not None and other != own and (path.relative_to(ROOT).as_posix(), target) not in ALLOWED:
                graph.setdefault(own, set()).add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                found.append([*trail[trail.index(nxt) :], nxt])
            elif len(trail) < len(graph) + 1:
                visit(nxt, [*trail, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_layer_imports_a_higher_one_or_a_sibling_app():
    wrong = [v for path in modules() for v in violations(path)]
    assert not wrong, "imports against the layers (see the module docstring):\n" + "\n".join(wrong)


def test_the_apps_and_layers_form_no_import_cycle():
    assert cycles(edges()) == []


def test_the_allowed_edges_still_exist():
    """An allowed edge that is gone is removed from ALLOWED, so the list stays the truth."""
    present = {(p.relative_to(ROOT).as_posix(), target) for p in modules() for _, target in imports(p)}
    assert present >= ALLOWED, sorted(ALLOWED - present)


def test_the_check_sees_function_level_imports_of_a_higher_layer_and_of_a_sibling():
    # given a sessions module importing processes_app inside a function, and a mobs module importing processes_app
    sessions_module = ROOT / "sessions_app" / "services" / "sessions.py"
    mobs_module = ROOT / "mobs_app" / "members.py"
    # when they are checked
    up = violations(sessions_module, "def f():\n    from processes_app.services import process_start\n")
    across = violations(mobs_module, "import processes_app.models\n")
    # then both are refused, and a cycle between two apps is seen
    assert len(up) == 1 and "layer 2) imports processes_app.services" in up[0]
    assert len(across) == 1
    assert cycles({"sessions_app": {"processes_app"}, "processes_app": {"sessions_app"}})
