"""fairseq's own unit tests, fetched like a dependency and run with and without fairseq_ext loaded.

The tests come from the source distribution of the installed ``fairseq-fixed`` release on PyPI
(``pip download --no-binary :all:``), downloaded once and kept under the virtualenv
(``<venv>/fairseq-own-tests/fairseq-fixed-<version>/``), so a second run does not download again.
That sdist ships ``tests/test_*.py`` but neither ``tests/__init__.py`` nor ``tests/utils.py``; the
first is written empty, the second is :mod:`support.fairseq_test_utils`.

:func:`run` runs a selection in a subprocess, from that directory (its own ``pytest.ini``, so this
project's pytest settings do not apply), and returns every test's outcome; with ``plugin=True``
fairseq_ext is loaded first, as ``fairseq-train --user-dir`` loads it: ``fairseq_cli.train``, then
``import fairseq_ext``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

DISTRIBUTION = "fairseq-fixed"
# Python >= 3.11.4 (and 3.12) extract only what a data archive may hold; older 3.11 releases lack the filter
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
HERE = Path(__file__).resolve().parent

# A pytest plugin (-p) that records every test's outcome into $FAIRSEQ_OWN_TESTS_OUTCOMES as JSON:
# "passed", "failed", "skipped" or "error" (collection, setup, teardown) per test id; a subtest is the
# test id followed by its description. The worst report of a test wins.
RECORDER = '''\
import json, os

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_OUTCOMES = {}


def _record(key, outcome):
    if _RANK[outcome] >= _RANK[_OUTCOMES.get(key, "passed")]:
        _OUTCOMES[key] = outcome


def pytest_runtest_logreport(report):
    context = getattr(report, "context", None)  # a unittest subTest
    key = report.nodeid if context is None else f"{report.nodeid} {report._sub_test_description()}"
    failed = "failed" if report.when == "call" else "error"
    _record(key, failed if report.failed else "skipped" if report.skipped else "passed")


def pytest_collectreport(report):
    if report.failed:
        _record(report.nodeid, "error")


def pytest_sessionfinish(session):
    with open(os.environ["FAIRSEQ_OWN_TESTS_OUTCOMES"], "w") as f:
        json.dump(_OUTCOMES, f, indent=1, sort_keys=True)
'''

# fairseq_ext loaded as `fairseq-train --user-dir fairseq_ext` loads it: the training loop is imported first.
PLUGIN_FIRST = '''\
import fairseq_cli.train  # noqa: F401
import fairseq_ext  # noqa: F401
'''

PYTEST_INI = "[pytest]\n"


def cache_root() -> Path:
    return Path(sys.prefix) / "fairseq-own-tests"


def suite() -> Path:
    """The directory holding the installed release's ``tests/``, downloading it on first use."""
    release = version(DISTRIBUTION)
    root = cache_root() / f"{DISTRIBUTION}-{release}"
    if not (root / "tests").is_dir():
        _download(release, root)
    (root / "tests" / "__init__.py").write_text("")
    shutil.copyfile(HERE / "fairseq_test_utils.py", root / "tests" / "utils.py")
    (root / "fairseq_own_tests_recorder.py").write_text(RECORDER)
    (root / "fairseq_ext_first.py").write_text(PLUGIN_FIRST)
    (root / "pytest.ini").write_text(PYTEST_INI)
    return root


def _download(release: str, root: Path) -> None:
    """Fetch the sdist with pip and keep its ``tests/`` (extracted beside ``root``, then renamed into it)."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", "--no-build-isolation", f"{DISTRIBUTION}=={release}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (fairseq's own tests come from PyPI):\n"
                               f"{proc.stderr[-3000:]}")
        [archive] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"] and m.isfile()]
            tar.extractall(Path(tmp) / "x", members=members, **SAFE_EXTRACT)
        [top] = (Path(tmp) / "x").iterdir()
        os.replace(top / "tests", root / "tests")


def run(root: Path, selection: list[str], plugin: bool, timeout: float = 1200) -> dict[str, str]:
    """Every selected test's outcome (test id -> passed/failed/skipped/error), fairseq_ext loaded or not."""
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = Path(tmp) / "outcomes.json"
        env = dict(os.environ, FAIRSEQ_OWN_TESTS_OUTCOMES=str(outcomes),
                   PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
        plugins = ["-p", "fairseq_own_tests_recorder", *(["-p", "fairseq_ext_first"] if plugin else [])]
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               *plugins, *selection]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        if not outcomes.exists():
            raise RuntimeError(f"fairseq's tests did not run ({' '.join(cmd)}):\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
        return json.loads(outcomes.read_text())


def run_both_ways(root: Path, selection: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(without fairseq_ext, with it)``: the outcomes of the two runs, made at the same time."""
    with ThreadPoolExecutor(2) as pool:
        plain, plugin = pool.map(lambda loaded: run(root, selection, plugin=loaded), (False, True))
    return plain, plugin
