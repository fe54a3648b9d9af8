"""The engine package stays framework-free."""

from __future__ import annotations

import ast
from pathlib import Path

import lashops.runtime

FRAMEWORKS = ("django", "ninja", "channels", "celery", "rest_framework")


def test_no_module_in_the_runtime_package_imports_a_web_framework() -> None:
    # Checked statically: the parent ``lashops`` package loads Celery (and so Django) on import.
    root = Path(lashops.runtime.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert offenders == []
    assert (root / "turn.py").exists()
