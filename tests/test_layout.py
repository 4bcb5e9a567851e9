"""The architecture's import direction: data and models never import callbacks, the CLI or the pipelines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_ae"
# What each part may import from the package (besides itself).
ALLOWED = {
    "data": {"lightning_ae.files", "lightning_ae.checks"},
    "models": {"lightning_ae.checks"},
    "evaluation": {"lightning_ae.files", "lightning_ae.checks"},
    "callbacks": {
        "lightning_ae.files",
        "lightning_ae.checks",
        "lightning_ae.provenance",
        "lightning_ae.data",
        "lightning_ae.models",
        "lightning_ae.evaluation",
    },
}


def package_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_ae"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("lightning_ae"))
    return names


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_flow_one_way(part):
    own = f"lightning_ae.{part}"
    for path in sorted((PACKAGE / part).glob("*.py")):
        for name in package_imports(path):
            if name == "lightning_ae" or name.startswith(own):
                continue
            assert any(name == a or name.startswith(a + ".") for a in ALLOWED[part]), f"{path.name} imports {name}"
