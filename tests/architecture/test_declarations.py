"""Facts declared once: every logged metric's name lives in ``mto/training/logged.py`` and nowhere else in the
code (everything else asks the declarations), and the docs name every declared metric."""

from __future__ import annotations

import ast
from pathlib import Path

from mto.training.logged import METRICS

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {n for m in METRICS for n in (m.name, m.validation) if n}


def string_constants(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module that are not docstrings, with their lines."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_a_metric_name_is_written_only_where_it_is_declared():
    home = ROOT / "mto" / "training" / "logged.py"
    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for package in ("mto", "ablations")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != home
        for line, value in string_constants(path)
        if value in DECLARED
    ]
    assert not found, "metric names spelled outside mto/training/logged.py (import its constants):\n" + "\n".join(found)


def test_the_docs_name_every_declared_metric():
    text = (ROOT / "docs" / "method.md").read_text()
    missing = sorted(n for n in DECLARED if f"`{n}`" not in text)
    assert not missing, f"docs/method.md, 'Logged metrics', does not name: {missing}"
