"""The architecture's import direction, for every part of the package, function-level imports included.

Data and models never import callbacks, the CLI, the study or the pipelines; what runs a config
(`experiment`) knows neither the CLI nor the study; nothing imports the CLI. And no module imports
one that imports it back, directly or through others.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_ae"
BASE = {"lightning_ae", "lightning_ae.checks"}  # the version string and the shared argument checks
SPECS = "lightning_ae.data.datasets"  # the dataset specs: a model's default input shape is MNIST's spec's
# What each part may import from the package (besides itself and BASE).
ALLOWED = {
    "checks": set(),
    "files": set(),
    "provenance": set(),
    "data": {"files"},
    "models": set(),  # and the dataset specs, for their default input shape (SPECS)
    "evaluation": {"files"},
    "strategies": {"files"},
    "callbacks": {"files", "provenance", "data", "models", "evaluation"},
    "pretraining": {"files", "data", "models", "strategies", "callbacks"},
    "experiment": {"files", "data", "callbacks", "pretraining", "strategies"},
    "study": {"files", "provenance", "evaluation", "experiment"},
    "cli": {"data", "callbacks", "experiment", "study"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def package_imports(path: Path) -> set[str]:
    """Every lightning_ae module `path` imports, wherever the import statement is (ast.walk sees function bodies)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_ae"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("lightning_ae"))
    return names


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_part_is_in_the_rules():
    assert {part(m) for m in MODULES if m != "lightning_ae"} == set(ALLOWED)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_imports_flow_one_way(name):
    for module, path in MODULES.items():
        if part(module) != name:
            continue
        for imported in package_imports(path):
            if imported in BASE or part(imported) == name or (name == "models" and imported == SPECS):
                continue
            assert part(imported) in ALLOWED[name], f"{module} imports {imported}"


def test_no_module_imports_one_that_imports_it_back():
    graph = {module: package_imports(path) & set(MODULES) - {module} for module, path in MODULES.items()}
    state: dict[str, str] = {}  # "open" while on the current path, "done" when all below it is acyclic

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycle = path[path.index(imported) :] + [imported] if imported in path else [module, imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check itself can fail: a two-module package that imports itself around is caught."""
    (tmp_path / "lightning_ae").mkdir()
    (tmp_path / "lightning_ae" / "__init__.py").write_text("")
    (tmp_path / "lightning_ae" / "a.py").write_text("def f():\n    from lightning_ae.b import g\n")
    (tmp_path / "lightning_ae" / "b.py").write_text("from lightning_ae.a import f\n")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "PACKAGE", tmp_path / "lightning_ae")
    monkeypatch.setattr(this, "MODULES", {module_name(p): p for p in sorted(this.PACKAGE.rglob("*.py"))})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_module_imports_one_that_imports_it_back()
