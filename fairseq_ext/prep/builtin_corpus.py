"""The built-in corpus: English prose from the docstrings of the Python standard
library that ships with every Python, so the demo and the tests need no download.

Each module becomes one document; its module, class and function docstrings
become paragraphs (code examples and reST markup are dropped).
"""

from __future__ import annotations

import ast
import os
import re
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from fairseq_ext.prep.file_walk import sorted_walk

_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)")
_MARKUP = re.compile(r":\w+:`([^`]*)`|``([^`]*)``|`([^`]*)`")
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "__pycache__"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Optional[Path] = None) -> Iterator[Path]:
    """The standard library's .py files, in a stable order."""
    root = root or stdlib_dir()
    for directory, _rel, names in sorted_walk(root, lambda d, _rel: d.name not in _SKIP_DIRS
                                              and not d.name.startswith(".")):
        yield from (directory / name for name in names if name.endswith(".py"))


def docstring_paragraphs(source: str) -> list[str]:
    """Prose paragraphs of every docstring in ``source``.

    >>> src = 'def f():\\n    \"\"\"Add two numbers together and return their sum.\\n\\n    >>> f()\\n    \"\"\"'
    >>> docstring_paragraphs(src)
    ['Add two numbers together and return their sum.']
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return []
    paragraphs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                paragraphs += _prose(doc)
    return paragraphs


def _prose(doc: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", doc):
        lines = [ln.strip() for ln in block.splitlines()]
        if not lines or any(_DOCTEST.match(ln) for ln in lines):
            continue
        text = _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), " ".join(lines))
        letters = sum(ch.isalpha() for ch in text)
        if len(text) >= 40 and letters > 0.6 * len(text) and not text.endswith(":"):
            out.append(text)
    return out


def write_builtin_corpus(out_dir: str | os.PathLike, max_bytes: int = 2_000_000) -> dict:
    """Write one text file per stdlib module (paragraphs separated by blank lines).

    Stops after ``max_bytes`` of text. Returns counts: files, paragraphs, bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = stdlib_dir()
    files = paragraphs = written = 0
    for path in stdlib_sources(root):
        paras = docstring_paragraphs(path.read_text(encoding="utf-8", errors="replace"))
        if len(paras) < 2:
            continue
        text = "\n\n".join(paras) + "\n"
        name = str(path.relative_to(root).with_suffix("")).replace(os.sep, ".") + ".txt"
        (out_dir / name).write_text(text, encoding="utf-8")
        files += 1
        paragraphs += len(paras)
        written += len(text.encode("utf-8"))
        if written >= max_bytes:
            break
    return {"files": files, "paragraphs": paragraphs, "bytes": written}


def write_builtin_code(out_dir: str | os.PathLike, max_bytes: int = 3_000_000) -> dict:
    """Copy whole standard-library packages (their ``.py`` files, tests left out) under ``out_dir``,
    one directory per package, as a checkout of several projects would look; packages in name
    order until ``max_bytes``. Returns counts: packages, files, bytes.
    """
    out_dir = Path(out_dir)
    root = stdlib_dir()
    packages = sorted(p for p in root.iterdir()
                      if p.is_dir() and p.name not in _SKIP_DIRS and (p / "__init__.py").is_file())
    count = files = written = 0
    for package in packages:
        for path in stdlib_sources(package):
            target = out_dir / package.name / path.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            target.write_bytes(data)
            files += 1
            written += len(data)
        count += 1
        if written >= max_bytes:
            break
    return {"packages": count, "files": files, "bytes": written}
