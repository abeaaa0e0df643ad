"""AdvTest-style renaming (fairseq_ext.prep.rename) on the standard library's own functions."""

from __future__ import annotations

import ast
import colorsys
import difflib
import fnmatch
import heapq
import inspect
import shlex
import statistics
import string
import textwrap

import pytest

from fairseq_ext.prep.rename import rename_definition

# (module, function, arguments): pure functions whose renamed copy must give the same results
PURE = [
    (colorsys, "rgb_to_hls", [(0.2, 0.4, 0.6), (1.0, 1.0, 1.0), (0.9, 0.1, 0.1)]),
    (colorsys, "hls_to_rgb", [(0.3, 0.5, 0.2), (0.0, 0.0, 0.0)]),
    (heapq, "nsmallest", [(3, [5, 1, 4, 2, 8]), (1, [3, 2]), (2, ["b", "a", "c"], str.upper)]),
    (textwrap, "dedent", [("    a\n      b\n    c\n",), ("\tx\n\ty\n",)]),
    (difflib, "get_close_matches", [("appel", ["ape", "apple", "peach", "puppy"])]),
    (statistics, "median", [([1, 3, 5],), ([1, 3, 5, 7],)]),
    (string, "capwords", [("hello  wide world",), ("a-b c-d", "-")]),
    (shlex, "split", [("a 'b c' d",), ('x "y z"',)]),
    (fnmatch, "translate", [("*.py",), ("[!a-c]?x",)]),
]


def source(module, name: str) -> str:
    return textwrap.dedent(inspect.getsource(getattr(module, name)))


def bound_names(code: str) -> set[str]:
    """Parameters and assigned local names of a definition (what renaming must remove)."""
    tree = ast.parse(code)
    out = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    out |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return out


@pytest.mark.parametrize("module, name, calls", PURE, ids=[f"{m.__name__}.{n}" for m, n, _ in PURE])
def test_renamed_stdlib_function_parses_hides_its_names_and_behaves_the_same(module, name, calls):
    original = source(module, name)
    renamed, why = rename_definition(original)
    assert why is None
    tree = ast.parse(renamed)  # still Python
    assert tree.body[0].name == "func"
    old = bound_names(original)
    new_names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    assert old and not old & new_names, f"names left: {old & new_names}"
    assert name not in new_names
    namespace = dict(vars(module))  # the module's globals (helpers, imports) as the original sees them
    exec(compile(renamed, f"<renamed {name}>", "exec"), namespace)
    for args in calls:
        assert namespace["func"](*args) == getattr(module, name)(*args), args


def test_every_kind_of_binding_and_what_is_kept():
    code = textwrap.dedent('''\
        @functools.cache
        def walk(tree, *, depth=LIMIT, **options):
            global COUNT
            import os.path as osp
            total = 0
            for i, (a, b) in enumerate(tree):
                total += a * b
            seen = [x for x in tree if (last := x)]
            try:
                pass
            except ValueError as err:
                raise err
            def inner(q):
                nonlocal total
                total += q + depth
                return lambda z: z + q + COUNT + len(seen)
            class Local:
                attr = 1
                def method(self):
                    return attr
            match tree:
                case [first, *rest]:
                    return first, rest
                case {"k": v, **others}:
                    return v, others
            with open(osp.join("a")) as fh:
                return walk(fh, depth=last), self.walk, Local.attr, options.items()
        ''')
    renamed, why = rename_definition(code)
    assert why is None
    assert renamed.startswith("@functools.cache\ndef func(arg_0, *, arg_1=LIMIT, **arg_2):\n    global COUNT\n")
    names = {n.id for n in ast.walk(ast.parse(renamed)) if isinstance(n, ast.Name)}
    # kept: globals, builtins, the import, the class attribute read as a global from a method, attributes
    assert {"functools", "LIMIT", "COUNT", "enumerate", "len", "open", "osp", "ValueError", "self", "attr"} <= names
    assert ".items()" in renamed and "Local.attr" not in renamed and ".attr" in renamed and "depth=" in renamed
    assert "attr = 1" in renamed and "def method(arg_" in renamed  # a class body's names are attributes
    lost = {"tree", "depth", "options", "total", "i", "a", "b", "seen", "x", "last", "err", "inner", "q", "z",
            "Local", "first", "rest", "v", "others", "fh", "walk"}
    assert not lost & names


def test_class_key_methods_stay_attributes():
    code = "class Stack(list):\n    size = 0\n    def push(self, item):\n        top = item\n" \
           "        self.append(top)\n        return Stack(self)"
    renamed, why = rename_definition(code)
    assert why is None
    assert renamed == ("class Class(list):\n    size = 0\n\n    def push(arg_0, arg_1):\n        var_0 = arg_1\n"
                       "        arg_0.append(var_0)\n        return Class(arg_0)")


def test_placeholders_never_capture_an_existing_name():
    code = "def f(x):\n    arg_0 = var_0 + x\n    return func(arg_0)"
    # func and var_0 are globals it reads, arg_0 a local that becomes var_1
    assert rename_definition(code)[0] == "def func_1(arg_1):\n    var_1 = var_0 + arg_1\n    return func(var_1)"


def test_unrenamable_keys_say_why():
    assert rename_definition("def f(:\n    pass") == (None, "does_not_parse")
    assert rename_definition("x = 1\ny = 2") == (None, "not_one_definition")
    assert rename_definition("    return x") == (None, "does_not_parse")  # a span: a fragment
