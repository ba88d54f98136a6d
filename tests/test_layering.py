"""Dependencies point one way, read from the source: ``core`` imports nothing else of
edgevpr; the runtime imports nothing of the torch side (model, train, export, eval) nor the
benchmark; the model knows nothing of training, export, evaluation, the benchmark or the
CLI. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevpr"
RULES = {
    "core": {"runtime", "model", "train", "export", "eval", "bench", "data", "cli", "demo",
             "info"},
    "runtime": {"model", "train", "export", "eval", "bench", "data", "demo", "info"},
    "model": {"train", "export", "eval", "bench", "runtime", "cli", "demo"},
}  # fmt: skip


def edgevpr_imports(path: Path) -> set[str]:
    """The edgevpr packages a module imports (``edgevpr.core.x`` -> ``core``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "edgevpr" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("room", sorted(RULES))
def test_no_import_points_the_wrong_way(room: str) -> None:
    wrong = {}
    for path in sorted((PACKAGE / room).rglob("*.py")):
        bad = edgevpr_imports(path) & RULES[room]
        if bad:
            wrong[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not wrong, wrong


def test_the_exception_is_where_users_import_it() -> None:
    from edgevpr.core.errors import EdgeVPRError
    from edgevpr.errors import EdgeVPRError as Compatible

    assert Compatible is EdgeVPRError


def test_the_runtime_package_needs_no_lazy_loading() -> None:
    source = (PACKAGE / "runtime" / "__init__.py").read_text()
    assert "__getattr__" not in source and "importlib" not in source
