"""AdvTest-style renaming: a Python definition with its own names replaced by placeholders.

In a docstring pair's key (one ``def``/``class``, decorators kept), the definition's name becomes
``func`` (``Class`` for a class), every parameter ``arg_0, arg_1, ...`` and every other name bound in a
function, lambda or comprehension (assignments, ``for``/``with``/``except`` targets, comprehension
variables, ``:=``, nested ``def``/``class`` names, ``match`` captures) ``var_0, var_1, ...``, numbered in
order of first appearance. A name gets one placeholder throughout the definition. What the code
does not bind itself is kept: attribute names after a dot, keyword names in calls, imported names,
builtins, globals, and the names bound in a class body (they are attributes: ``self.x``, methods).

Names are resolved by Python's scoping rules, found with :mod:`ast` (a ``global x`` read in one
function stays ``x`` while another function's local ``x`` is renamed; a class body is not visible
from the methods in it), and the code is written back with :func:`ast.unparse`, so comments and
formatting are gone. Placeholders never clash with a name the code already uses.

>>> print(rename_definition("def area(width, height=2):\\n    size = width * height\\n    return size")[0])
def func(arg_0, arg_1=2):
    var_0 = arg_0 * arg_1
    return var_0
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

# Why a key could not be renamed (counted by eval-retrieval --rename).
RENAME_SKIPS = ("does_not_parse", "not_one_definition", "does_not_unparse")

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(eq=False)
class _Scope:
    kind: str  # module, function, class, comprehension
    parent: _Scope | None
    bound: set = field(default_factory=set)
    params: set = field(default_factory=set)
    kept: set = field(default_factory=set)  # imported: bound here, never renamed
    globals: set = field(default_factory=set)
    nonlocals: set = field(default_factory=set)


@dataclass
class _Occurrence:
    holder: object  # the node (or list, for global/nonlocal names) holding the name
    slot: object  # attribute name or list index
    name: str
    scope: _Scope
    outward: bool = False  # a nonlocal declaration: resolve from the enclosing scope


class _Scanner:
    """Every place a name is written, with the scope it is looked up in."""

    def __init__(self):
        self.occurrences: list[_Occurrence] = []
        self.identifiers: set[str] = set()

    def note(self, holder, slot, scope: _Scope, binds: bool = False, param: bool = False):
        name = holder[slot] if isinstance(holder, list) else getattr(holder, slot)
        if name is None:
            return
        self.occurrences.append(_Occurrence(holder, slot, name, scope))
        if binds:
            scope.bound.add(name)
        if param:
            scope.params.add(name)

    def visit(self, node, scope: _Scope) -> None:  # noqa: C901, PLR0912 - one branch per kind of binding
        for text in (getattr(node, a, None) for a in ("id", "arg", "name", "attr", "asname")):
            if isinstance(text, str):
                self.identifiers.add(text)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self._function(node, scope)
        elif isinstance(node, ast.ClassDef):
            for child in [*node.decorator_list, *node.bases, *node.keywords]:
                self.visit(child, scope)
            self.note(node, "name", scope, binds=True)
            inner = _Scope("class", scope)
            for child in node.body:
                self.visit(child, inner)
        elif isinstance(node, _COMPREHENSIONS):
            self._comprehension(node, scope)
        elif isinstance(node, ast.NamedExpr):  # binds in the nearest scope that is not a comprehension
            target = scope
            while target.kind == "comprehension" and target.parent is not None:
                target = target.parent
            self.visit(node.value, scope)
            self.note(node.target, "id", target, binds=True)
        elif isinstance(node, ast.Name):
            self.note(node, "id", scope, binds=not isinstance(node.ctx, ast.Load))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            (scope.globals if isinstance(node, ast.Global) else scope.nonlocals).update(node.names)
            for i in range(len(node.names)):
                self.note(node.names, i, scope)
                self.occurrences[-1].outward = isinstance(node, ast.Nonlocal)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            scope.kept.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)):
            self.note(node, "name", scope, binds=True)
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)
        elif isinstance(node, ast.MatchMapping):
            self.note(node, "rest", scope, binds=True)
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)

    def _function(self, node, scope: _Scope) -> None:
        a = node.args
        outer = [*a.defaults, *(d for d in a.kw_defaults if d is not None)]
        if not isinstance(node, ast.Lambda):
            outer = [*node.decorator_list, *outer, node.returns]
            outer += [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x]
        for child in outer:
            if child is not None:
                self.visit(child, scope)
        if not isinstance(node, ast.Lambda):
            self.note(node, "name", scope, binds=True)
        inner = _Scope("function", scope)
        for arg in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg):
            if arg is not None:
                self.identifiers.add(arg.arg)
                self.note(arg, "arg", inner, binds=True, param=True)
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child, inner)

    def _comprehension(self, node, scope: _Scope) -> None:
        self.visit(node.generators[0].iter, scope)  # the first iterable is evaluated outside
        inner = _Scope("comprehension", scope)
        for i, gen in enumerate(node.generators):
            self.visit(gen.target, inner)
            if i:
                self.visit(gen.iter, inner)
            for cond in gen.ifs:
                self.visit(cond, inner)
        for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
            self.visit(part, inner)


def _resolve(occ: _Occurrence) -> _Scope | None:
    """The scope whose binding ``occ`` refers to (None: a global or builtin)."""
    scope, first = (occ.scope.parent, False) if occ.outward else (occ.scope, True)
    while scope is not None:
        if occ.name in scope.globals:
            return _module(scope)
        visible = first or scope.kind != "class"
        if visible and occ.name not in scope.nonlocals and occ.name in scope.bound | scope.kept:
            return scope
        scope, first = scope.parent, False
    return None


def _module(scope: _Scope) -> _Scope:
    while scope.parent is not None:
        scope = scope.parent
    return scope


def _fresh(prefix: str, taken: set[str], bare: bool = False):
    """prefix_0, prefix_1, ... (with ``bare``: prefix, prefix_1, ...), skipping the names in ``taken``."""
    i = 0
    while True:
        name = prefix if bare and i == 0 else f"{prefix}_{i}"
        if name not in taken:
            yield name
        i += 1


def rename_definition(code: str) -> tuple[str | None, str | None]:
    """(renamed code, None), or (None, why not: one of :data:`RENAME_SKIPS`)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):  # ValueError: a null byte
        return None, "does_not_parse"
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None, "not_one_definition"
    top = tree.body[0]
    scanner, module = _Scanner(), _Scope("module", None)
    scanner.visit(top, module)
    taken = scanner.identifiers
    top_name = top.name
    fresh = {"arg": _fresh("arg", taken), "var": _fresh("var", taken)}
    title = next(_fresh("Class" if isinstance(top, ast.ClassDef) else "func", taken, bare=True))
    mapping: dict[str, str] = {}
    for occ in scanner.occurrences:
        scope = _resolve(occ)
        if scope is module and occ.name == top_name:
            new = title
        elif scope is None or scope.kind in ("module", "class") or occ.name in scope.kept:
            continue
        else:
            if occ.name not in mapping:
                mapping[occ.name] = next(fresh["arg" if occ.name in scope.params else "var"])
            new = mapping[occ.name]
        if isinstance(occ.holder, list):
            occ.holder[occ.slot] = new
        else:
            setattr(occ.holder, occ.slot, new)
    try:
        return ast.unparse(tree), None
    except (ValueError, RecursionError, AttributeError):
        return None, "does_not_unparse"
