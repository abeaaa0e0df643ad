"""Pairs from the text of one source file; no tokenizer here (:mod:`fairseq_ext.prep.code_pairs` encodes them).

Docstring pairs (Python): every function, method and class whose docstring has
at least ``min_query_words`` words gives (query: the docstring through
``inspect.cleandoc``, key: the definition's source without the docstring
statement, decorators kept, dedented). Found with ``ast`` (node positions),
never with regular expressions. The key also leaves out the docstrings of the
definitions inside it (a class's methods): each of those is a query of its own,
which the class's key would otherwise hold word for word. A docstring that
cannot be cut out cleanly stays (and gives no pair): one that is the whole
body, shares a line with code, or is followed by another bare string.

Span pairs (any language, the CoCoS pair): a span of whole lines (the key)
and the file with that span replaced by a mask token (the query), so that
``query.replace(mask, key) == text``. The span's length is drawn in
``[min_lines, min(max_lines, lines // 2)]`` (the query keeps at least half the
file as context), its first and last lines are not blank, and the draw is a
function of the seed and the file's bytes only.
"""

from __future__ import annotations

import ast
import inspect
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Why a definition with a docstring gives no pair (the key's length is checked after encoding).
DOCSTRING_SKIPS = ("short_docstring", "docstring_only", "inline_docstring", "string_after_docstring")
# Why a drawn span gives no pair.
SPAN_SKIPS = ("no_span_fits", "duplicate_span")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Pair:
    kind: str  # "docstring" or "span"
    name: str  # qualified name of the definition ("Class.method"); "" for a span
    query: str
    key: str
    prefix: str = ""  # span: the query is prefix + mask + suffix
    suffix: str = ""


def source_lines(text: str) -> list[str]:
    """The lines as Python's parser numbers them, line ends kept: ``\\r\\n``, ``\\r`` or ``\\n`` end
    one, a form feed does not (``str.splitlines`` would split there too).

    >>> source_lines("a = 1\\r\\n\\x0cb = 2\\nc")
    ['a = 1\\r\\n', '\\x0cb = 2\\n', 'c']
    """
    out: list[str] = []
    for piece in text.splitlines(keepends=True):
        if out and not out[-1].endswith(("\n", "\r")):
            out[-1] += piece
        else:
            out.append(piece)
    return out


def definitions(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """(def or class node, qualified name such as ``Class.method``) in source order, at any depth
    (inside ``if``, ``try``, other definitions)."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, _DEFINITIONS):
            yield node, prefix + node.name
            prefix = f"{prefix}{node.name}."
        stack.extend((child, prefix) for child in reversed(list(ast.iter_child_nodes(node))))


def docstring_pairs(text: str, min_query_words: int, skipped: Counter) -> list[Pair]:
    """The docstring pairs of a Python file; definitions that give none are counted in ``skipped``.

    Raises ``SyntaxError`` (or ``ValueError``, ``RecursionError``) when ``text`` does not parse.
    """
    with warnings.catch_warnings():  # the file's own invalid escapes ("\d"): the compiler warns about each,
        warnings.simplefilter("ignore", SyntaxWarning)  # which says nothing about the pairs
        warnings.simplefilter("ignore", DeprecationWarning)  # (Python < 3.12 raises this one instead)
        tree = ast.parse(text)
    lines = source_lines(text)
    found = list(definitions(tree))
    reasons = [_no_pair_reason(lines, node) for node, _name in found]
    # the docstrings a key leaves out: its own and those of the definitions inside it (each is a query of its
    # own; in its class's key it would match that key word for word); (first line, end) 0-based, in source order
    drop = np.array([(n.body[0].lineno - 1, n.body[0].end_lineno) for (n, _), r in zip(found, reasons)
                     if r is None], dtype=np.int64).reshape(-1, 2)
    pairs = []
    for (node, name), reason in zip(found, reasons):
        if reason == "no_docstring":
            continue
        query = inspect.cleandoc(ast.get_docstring(node, clean=False))
        if reason is None and len(query.split()) < min_query_words:
            reason = "short_docstring"
        if reason is not None:
            skipped[reason] += 1
            continue
        pairs.append(Pair("docstring", name, query, _key_without_docstrings(lines, node, drop)))
    return pairs


def _no_pair_reason(lines: list[str], node: ast.AST) -> str | None:
    """Why a definition's docstring cannot be cut out of it cleanly ("no_docstring" when it has none)."""
    if ast.get_docstring(node, clean=False) is None:
        return "no_docstring"
    if len(node.body) == 1:
        return "docstring_only"  # nothing left to find
    if not _alone_on_its_lines(lines, node.body[0]) or _indent(lines, node).strip():
        return "inline_docstring"
    if _is_string_statement(node.body[1]):
        return "string_after_docstring"  # it would become the key's docstring
    return None


def _indent(lines: list[str], node: ast.AST) -> str:
    return lines[node.lineno - 1].encode("utf-8")[:node.col_offset].decode("utf-8")


def _alone_on_its_lines(lines: list[str], stmt: ast.stmt) -> bool:
    before = lines[stmt.lineno - 1].encode("utf-8")[:stmt.col_offset]
    after = lines[stmt.end_lineno - 1].encode("utf-8")[stmt.end_col_offset:].strip()
    return not before.strip() and (not after or after.startswith(b"#"))


def _is_string_statement(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _key_without_docstrings(lines: list[str], node: ast.AST, drop: np.ndarray) -> str:
    """From the first decorator to the node's end, the lines of the docstrings in ``drop`` (its own and
    nested ones) left out, dedented by the definition's own indentation (lines that lack it, inside a
    multi-line string, are kept as they are)."""
    first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    inside = drop[(drop[:, 0] >= first) & (drop[:, 1] <= node.end_lineno)]
    keep = np.ones(node.end_lineno - first, dtype=bool)
    for a, b in inside - first:
        keep[a:b] = False
    kept = [lines[first + i] for i in np.flatnonzero(keep)]
    kept[-1] = kept[-1].encode("utf-8")[:node.end_col_offset].decode("utf-8")
    indent = _indent(lines, node)
    if indent:
        kept = [line[len(indent):] if line.startswith(indent) else line for line in kept]
    return "".join(kept)


def span_seed(seed: int, sha256_hex: str) -> np.random.Generator:
    """The generator of a file's spans: a function of ``--seed`` and the file's bytes only."""
    return np.random.default_rng([seed, int(sha256_hex[:16], 16)])


def span_pairs(text: str, min_lines: int, max_lines: int, count: int, rng: np.random.Generator,
               skipped: Counter, mask: str = "<mask>") -> list[Pair]:
    """Up to ``count`` span pairs of one file (the caller checks it has ``2 * min_lines`` lines);
    draws that give none are counted in ``skipped``.

    >>> text = "a\\nb\\n\\nc\\nd\\ne\\n"
    >>> [p] = span_pairs(text, 2, 2, 1, np.random.default_rng(0), Counter())
    >>> p.query, p.key
    ('a\\nb\\n\\nc\\n<mask>', 'd\\ne\\n')
    """
    lines = source_lines(text)
    n = len(lines)
    hi = min(max_lines, n // 2)
    assert min_lines <= hi, "the caller skips files with too few lines"
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # (n + 1,) character offsets of line starts
    nonblank = np.fromiter((bool(line.strip()) for line in lines), dtype=bool, count=n)
    taken: set[tuple[int, int]] = set()
    pairs = []
    for _ in range(count):
        size = int(rng.integers(min_lines, hi + 1))
        starts = np.flatnonzero(nonblank[:n - size + 1] & nonblank[size - 1:])  # first and last line not blank
        if starts.size == 0:
            skipped["no_span_fits"] += 1
            continue
        s = int(rng.choice(starts))
        if (s, size) in taken:
            skipped["duplicate_span"] += 1
            continue
        taken.add((s, size))
        a, b = int(offsets[s]), int(offsets[s + size])
        pairs.append(Pair("span", "", f"{text[:a]}{mask}{text[b:]}", text[a:b], text[:a], text[b:]))
    return pairs
