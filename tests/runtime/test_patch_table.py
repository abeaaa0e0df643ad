"""The table of run-time patches: the only place that changes fairseq, applied once, release-checked."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from fairseq_ext import runtime
from fairseq_ext.errors import UserError
from fairseq_ext.runtime import patching
from fairseq_ext.runtime.patches import PATCHES

PACKAGE = REPO / "fairseq_ext"
FAIRSEQ_PACKAGES = ("fairseq", "fairseq_cli")
MUTATORS = ("update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")


def _imported_from_fairseq(tree: ast.AST) -> set[str]:
    """The names a module binds to fairseq objects: ``import fairseq.x [as y]``, ``from fairseq.x import a [as b]``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names
                      if a.name.split(".")[0] in FAIRSEQ_PACKAGES}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            if (node.module or "").split(".")[0] in FAIRSEQ_PACKAGES:
                names |= {a.asname or a.name for a in node.names}
    return names


def _chain(node: ast.AST) -> list[ast.AST]:
    """``a.b[c].d`` -> [Name a, Attribute b, Subscript, Attribute d]: from the root outwards."""
    chain = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        chain.append(node)
        node = node.value
    return [node, *reversed(chain)]


def _changes_fairseq(target: ast.AST, fairseq: set[str], whole: bool = False) -> bool:
    """Whether assigning to (or deleting, or mutating) ``target`` changes a fairseq object or sys.excepthook /
    sys.modules; ``whole``: ``target`` itself is changed (setattr's first argument, a mutated dict)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_changes_fairseq(t, fairseq, whole) for t in target.elts)
    if isinstance(target, ast.Starred):
        return _changes_fairseq(target.value, fairseq, whole)
    chain = _chain(target)
    if not isinstance(chain[0], ast.Name) or (len(chain) == 1 and not whole):
        return False
    if chain[0].id in fairseq:
        return True
    return chain[0].id == "sys" and len(chain) > 1 and getattr(chain[1], "attr", None) in ("excepthook", "modules")


def assignments_to_fairseq(source: str) -> list[str]:
    """Every statement of ``source`` that assigns to, deletes or mutates an attribute or item of an object
    imported from fairseq/fairseq_cli (or ``sys.excepthook``, ``sys.modules``), as ``line N: code``."""
    tree = ast.parse(source)
    fairseq = _imported_from_fairseq(tree)
    found = []
    for node in ast.walk(tree):
        targets: list[tuple[ast.AST, bool]] = []
        if isinstance(node, ast.Assign):
            targets = [(t, False) for t in node.targets]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [(node.target, False)]
        elif isinstance(node, ast.Delete):
            targets = [(t, False) for t in node.targets]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            targets = [(node.args[0], True)] if node.func.id in ("setattr", "delattr") else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            targets = [(node.func.value, True)]
        if any(_changes_fairseq(t, fairseq, whole) for t, whole in targets):
            found.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found


@pytest.mark.parametrize("code, caught", [
    ("from fairseq.models import ARCH_CONFIG_REGISTRY\nARCH_CONFIG_REGISTRY['hf_bert'] = f", True),
    ("from fairseq import checkpoint_utils\ncheckpoint_utils.torch = proxy", True),
    ("from fairseq.trainer import Trainer\nTrainer.load_checkpoint = wrapper", True),
    ("from fairseq.distributed import utils as du\ndu.call_main, x = f, 1", True),
    ("import fairseq.checkpoint_utils\nfairseq.checkpoint_utils.load_checkpoint = f", True),
    ("import fairseq_cli.train as t\nsetattr(t, 'validate_and_save', f)", True),
    ("from fairseq.models import ARCH_CONFIG_REGISTRY\nARCH_CONFIG_REGISTRY.update(x=f)", True),
    ("from fairseq.models import ARCH_CONFIG_REGISTRY\ndel ARCH_CONFIG_REGISTRY['x']", True),
    ("import sys\nsys.excepthook = hook", True),
    ("import sys\nsys.modules['torchaudio'] = None", True),
    ("import sys\nsys.modules['fairseq_cli.train'].validate_and_save = f", True),
    ("def f():\n    from fairseq import checkpoint_utils\n    checkpoint_utils.x += 1", True),
    ("from fairseq.models import register_model\nargs.task = 'x'\nsetattr(args, 'a', 1)\nmodels = {}", False),
    ("import sys\nsys.argv = ['x']\nfrom fairseq import utils\nutils = None", False),
])
def test_the_check_catches_every_form_of_patching(code, caught):
    assert bool(assignments_to_fairseq(code)) == caught


# Values set on objects fairseq built for us, not changes to fairseq, with the reason (runtime/patches.py's
# docstring says more); listed so that each stays visible, and the test fails when one moves or goes.
SET_ON_OUR_OBJECTS = {
    ("fairseq_ext/tasks/hf_denoising.py", 'args.task = "hf_denoising"'):
        "the settings of the BART model this task has just built (fairseq's BART reads args.task on load)",
}


def test_nothing_outside_runtime_assigns_to_fairseq():
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if (PACKAGE / "runtime") not in p.parents]
    found = [f"{p.relative_to(REPO)} {line}" for p in outside for line in assignments_to_fairseq(p.read_text())]
    assert len(outside) > 90
    assert not found, "only fairseq_ext/runtime/ changes fairseq (an entry of runtime/patches.py):\n" + "\n".join(found)


def test_the_values_set_on_objects_fairseq_built_are_the_listed_ones():
    """An assignment in a task to the settings (``args``) of the model fairseq built for it is not caught by
    the import-based check above: each is listed, with its reason, in SET_ON_OUR_OBJECTS."""
    found = set()
    for path in sorted((PACKAGE / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                                    and t.value.id == "args" for t in node.targets):
                found.add((str(path.relative_to(REPO)), ast.unparse(node)))
    assert found == {(path, code.replace('"', "'")) for path, code in SET_ON_OUR_OBJECTS}


def test_one_sentinel_convention():
    old = ("fairseq_ext_checked", "fairseq_ext_fallback", "fairseq_ext_atomic", "_fairseq_ext_distributed",
           "_fairseq_ext_bf16", "fairseq_ext_signals", "fairseq_ext_one_line")
    assert not [(p.name, name) for p in PACKAGE.rglob("*.py") for name in old if name in p.read_text()]


def test_every_entry_names_tests_that_exist():
    assert len({p.target for p in PATCHES}) == len(PATCHES)
    for patch in PATCHES:
        assert patch.tests and patch.what and patch.why, patch.target
        for test in patch.tests:
            path, _, name = test.partition("::")
            tree = ast.parse((REPO / path).read_text())
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, (patch.target, test)


# As fairseq-train runs: its training loop loaded before the plugin, and a program name whose user errors
# are one line (sys.excepthook); then the table applied again, twice.
INSTALL_TWICE = """
import json, sys
import fairseq_cli.train
import fairseq_ext
from fairseq_ext import runtime
from fairseq_ext.runtime import patching
from fairseq_ext.runtime.patches import PATCHES

def values():
    return {p.target: [s.get() for s in patching.slots(p)] for p in PATCHES}

first = values()
fairseq_ext.register()
runtime.install()
runtime.install(training=True)
again = values()
print(json.dumps({
    "marks": {t: [patching.patched(v) for v in vs] for t, vs in first.items()},
    "wrapped_once": [t for t, vs in first.items() for v in vs if patching.patched(getattr(v, "__wrapped__", None))],
    "unchanged": all(a is b for t in first for a, b in zip(first[t], again[t], strict=True)),
}))
"""


def test_every_entry_is_applied_exactly_once(tmp_path):
    script = tmp_path / "train.py"  # one of fairseq's training programs (fairseq_cli/train.py run as a file)
    script.write_text(INSTALL_TWICE)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    expected = {p.target: [p.target] for p in PATCHES}
    expected["sys:modules['torchaudio']"] = [None]  # absent, or imported and working: nothing to change
    assert report["marks"] == expected
    assert report["wrapped_once"] == [] and report["unchanged"] is True


def test_an_unknown_release_is_one_warning_line_naming_it(monkeypatch, caplog):
    import fairseq

    monkeypatch.setattr(patching, "_checked", False)
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.runtime"):
        runtime.install(training=False)  # the supported release: nothing to say
        assert not caplog.records
        monkeypatch.setattr(patching, "_checked", False)
        monkeypatch.setattr(fairseq, "__version__", "0.13.0")
        runtime.install(training=False)
        runtime.install(training=False)
    assert [r.getMessage() for r in caplog.records] == [
        "fairseq 0.13.0 (no distribution metadata) is not a release fairseq_ext supports (fairseq-fixed 0.12.3.1); "
        "fairseq_ext changes fairseq at run time and may not fit this one"]


MISSING = ("fairseq.checkpoint_utils.load_checkpoint_to_cpu is missing in fairseq 0.12.3.1 (fairseq-fixed): "
           "fairseq_ext replaces it (the same, then task.check_checkpoint(state, path) of the trainer's task that "
           "loads it) and supports fairseq-fixed 0.12.3.1 only")


def test_a_missing_target_is_one_line_naming_it(monkeypatch, tmp_path):
    from fairseq import checkpoint_utils

    unpatched = checkpoint_utils.torch_persistent_save.__wrapped__
    monkeypatch.setattr(checkpoint_utils, "torch_persistent_save", unpatched)  # as before install()
    monkeypatch.delattr(checkpoint_utils, "load_checkpoint_to_cpu")
    with pytest.raises(UserError) as info:
        runtime.install(training=False)
    assert str(info.value) == MISSING
    assert checkpoint_utils.torch_persistent_save is unpatched  # every target is looked up before any is patched

    # fairseq-train reports it as one line, not an AttributeError deep inside training
    script = tmp_path / "train.py"
    script.write_text("from fairseq import checkpoint_utils\ndel checkpoint_utils.load_checkpoint_to_cpu\n"
                      "import fairseq_ext\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [f"fairseq-train: error: {MISSING}"]


def test_a_module_fairseq_lacks_is_one_line_naming_it(monkeypatch):
    """A release that renames or drops a patched module: one line, before anything is patched."""
    import importlib

    real = importlib.import_module

    def without_trainer(name, *args, **kwargs):
        if name == "fairseq.trainer":
            raise ModuleNotFoundError("No module named 'fairseq.trainer'")
        return real(name, *args, **kwargs)

    target = next(p for p in PATCHES if p.module == "fairseq.trainer")
    monkeypatch.setattr(patching.importlib, "import_module", without_trainer)
    with pytest.raises(UserError) as info:
        patching.slots(target)
    assert str(info.value).startswith(f"{target.target.replace(':', '.')}: module fairseq.trainer cannot be "
                                      "imported in fairseq ")
    assert "\n" not in str(info.value) and "No module named 'fairseq.trainer'" in str(info.value)


def test_fairseqs_library_functions_keep_their_contract():
    """fairseq's load_checkpoint is fairseq's own: it raises its own errors and never exits the program."""
    from fairseq import checkpoint_utils

    assert patching.patched(checkpoint_utils.load_checkpoint) is None
    assert Path(checkpoint_utils.load_checkpoint.__code__.co_filename).parent.name == "fairseq"
