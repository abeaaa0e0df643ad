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


def too_long(text: str, name: str) -> list[str]:
    """What in the module ``text`` is over the limits without saying why, one line each."""
    tree = ast.parse(text)
    lines = len(text.splitlines())
    found = []
    if lines > MAX_MODULE_LINES and REASON not in (ast.get_docstring(tree) or ""):
        found.append(f"{name}: {lines} lines; split it, or say why at its top ({REASON!r} in its docstring)")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or ""):
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines; split it, or say why in its docstring")
    return found


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_modules_and_functions_are_small_or_say_why(path):
    assert too_long(path.read_text(encoding="utf-8"), str(path)) == []


def test_the_check_finds_what_is_long_and_accepts_a_reason():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert [line.split(":")[1] for line in too_long(f"def f():\n{body}\n", "m")] == ["1 f"]
    assert too_long(f'def f():\n    """Why this is long: a table."""\n{body}\n', "m") == []
    module = "\n".join(f"x{i} = {i}" for i in range(MAX_MODULE_LINES + 1))
    assert too_long(module, "m") == [f"m: {MAX_MODULE_LINES + 1} lines; split it, or say why at its top "
                                     f"({REASON!r} in its docstring)"]
