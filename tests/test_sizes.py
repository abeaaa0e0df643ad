"""Small modules and functions (the size limits of docs/development.md): no module of fairseq_ext over 300
lines, no function over 50, unless it says why at its top (a ``Why this is long:`` paragraph in the module's
or the function's docstring). ruff's C901/PLR0912/PLR0915 hold complexity and statements (pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fairseq_ext"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 50
REASON = "Why this is long:"
MODULES = sorted(PACKAGE.rglob("*.py"))


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_modules_and_functions_are_small_or_say_why(path):
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES or REASON in (ast.get_docstring(tree) or ""), \
        f"{path}: {lines} lines; split it, or say why at its top ({REASON!r} in the module docstring)"
    for node in functions(tree):
        length = node.end_lineno - node.lineno + 1
        assert length <= MAX_FUNCTION_LINES or REASON in (ast.get_docstring(node) or ""), \
            f"{path}:{node.lineno} {node.name}: {length} lines; split it, or say why in its docstring"


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def f():\n{body}\n")
    (node,) = functions(tree)
    assert node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
