"""The package's structure: imports point down, no cycle, no Airflow, no oversized module.

Layers, bottom up: ``data``, ``ranking`` and ``models`` know nothing of training, scoring,
evaluation or publishing; scoring does not import the training loop; the SQL sinks sit
below their factory. Read from the source with ``ast`` (nothing is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "recsys_core"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy and type-checking imports
    count too); ``from package import module`` counts as the module, not the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):  # some names are attributes of node.module
                found.add(node.module)
    return found


GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_no_import_cycle_in_recsys_core():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(GRAPH[name]):
            if dep.startswith(name + "."):  # a package importing its own submodule is not a cycle
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, name, dep]))
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def test_imports_point_down():
    lower = ("recsys_core.data", "recsys_core.ranking", "recsys_core.models")
    upper = ("recsys_core.training", "recsys_core.scoring", "recsys_core.evaluation", "recsys_core.publish",
             "recsys_core.spark", "recsys_core.cli")  # fmt: skip
    wrong = []
    for name, deps in GRAPH.items():
        if name.startswith(lower):
            wrong += [f"{name} -> {d}" for d in deps if d.startswith(upper)]
        if name.startswith("recsys_core.scoring"):  # scoring loads models; it never trains
            wrong += [f"{name} -> {d}" for d in deps
                      if d.startswith("recsys_core.training") and d != "recsys_core.training.artifacts"]  # fmt: skip
        if name.startswith("recsys_core.training"):
            wrong += [f"{name} -> {d}" for d in deps if d.startswith(("recsys_core.evaluation", "recsys_core.scoring"))]
        if name in ("recsys_core.publish.sink", "recsys_core.publish.contract"):
            wrong += [f"{name} -> {d}" for d in deps if d.startswith("recsys_core.publish.") and
                      d not in ("recsys_core.publish.contract", "recsys_core.publish.hooks")]  # fmt: skip
    assert wrong == []


def test_no_airflow_in_recsys_core_and_small_modules():
    assert [n for n, p in MODULES.items() if any(m.split(".")[0] == "airflow" for m in imports_of(p))] == []
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: lines for n, lines in long.items() if lines > MAX_LINES} == {}
