"""atomic_output_dir: a process that dies at any step of writing or replacing leaves the old output or the new one.

Each case runs the write in a child process that calls ``os._exit`` at one step, so no
``except``/``finally`` runs, as after ``kill -9``; then the next run cleans up after it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from fairseq_ext import io_utils
from fairseq_ext.io_utils import atomic_output_dir, check_output_dir, leftovers

FILES = ("a.txt", "sub/b.txt", "sub/c.txt")

# The child: write FILES holding VERSION into OUT through atomic_output_dir, dying at STEP.
CHILD = r"""
import os, shutil, sys
sys.argv[0] = "fairseq-ext"  # as the command does: fairseq_ext without importing fairseq (seconds)
from pathlib import Path
from fairseq_ext import io_utils

out, version, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
files = sys.argv[4:]
die = lambda: os._exit(9)  # no cleanup of any kind runs, as after kill -9
real_exchange, real_rename, real_rmtree = io_utils._exchange, Path.rename, shutil.rmtree
renames = []

def exchange(a, b):
    if step == "before swap":
        die()
    done = real_exchange(a, b)
    if step == "after swap":
        die()
    return done

def rename(self, target):  # the fallback's renames: out -> old, tmp -> out, old -> tmp
    renames.append(target)
    if step == f"before rename {len(renames)}":
        die()
    return real_rename(self, target)

def rmtree(path, ignore_errors=False):  # removing the old output: one file gone, then death
    if step == "removing old":
        next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
        die()
    real_rmtree(path, ignore_errors=ignore_errors)

io_utils._exchange = (lambda a, b: False) if step.startswith("before rename") else exchange
Path.rename, io_utils.shutil.rmtree = rename, rmtree
with io_utils.atomic_output_dir(out, overwrite=True) as tmp:
    for i, name in enumerate(files):
        if step == "writing" and i == 1:
            die()
        (tmp / name).parent.mkdir(exist_ok=True)
        (tmp / name).write_text(version)
"""


def child(out: Path, version: str, step: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", CHILD, str(out), version, step, *FILES], cwd=REPO, env=env,
                          capture_output=True, text=True).returncode


def version_of(out: Path) -> str | None:
    """The version a complete output holds; None when there is none; an AssertionError when it is half of one."""
    if not out.exists():
        return None
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == sorted(FILES), found
    [version] = {(out / f).read_text() for f in FILES}
    return version


@pytest.mark.parametrize("step,after", [
    ("writing", "old"), ("before swap", "old"), ("after swap", "new"), ("removing old", "new"),
    ("before rename 1", "old"), ("before rename 2", None), ("before rename 3", "new"),
])
def test_killed_at_any_step_leaves_old_or_new_and_the_next_run_recovers(tmp_path, caplog, step, after):
    out = tmp_path / "out"
    assert child(out, "old", "none") == 0 and version_of(out) == "old" and leftovers(out) == []
    assert child(out, "new", step) == 9
    # on Linux the swap is one step; where it is not (rename 1 done, rename 2 not) the old output waits beside
    assert version_of(out) == after
    left = leftovers(out)
    assert left and all(n.startswith((".out.tmp-", ".out.old-")) for n in left)
    if after is None:
        [old] = [n for n in left if n.startswith(".out.old-")]
        assert version_of(tmp_path / old) == "old"
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.io_utils"):
        check_output_dir(out, overwrite=True)  # what the next run does first
    assert leftovers(out) == [] and sorted(os.listdir(tmp_path)) == ["out"]
    assert version_of(out) == (after or "old")  # an interrupted replacement: the old output is restored
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(left) and all(
        re.fullmatch(rf"{re.escape(str(out))}: removed \.out\.(tmp|old)-\S+, left by an interrupted run", ln) or
        re.fullmatch(rf"{re.escape(str(out))}: restored the previous output from \.out\.old-\S+, left by a run "
                     "killed while replacing it", ln) for ln in lines), lines
    assert child(out, "new", "none") == 0 and version_of(out) == "new" and leftovers(out) == []


def test_fresh_write_killed_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "out"
    assert child(out, "new", "writing") == 9
    [left] = os.listdir(tmp_path)
    assert not out.exists() and left.startswith(".out.tmp-") and left in leftovers(out)
    assert child(out, "new", "none") == 0 and version_of(out) == "new" and os.listdir(tmp_path) == ["out"]


def test_live_or_foreign_temporaries_are_left_and_reported(tmp_path, caplog):
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = f".out.tmp-{io_utils._HOST}-{sleeper.pid}-abc123_x"
        foreign = ".out.tmp-otherhost-4242-abc123_x"
        unrelated = [".out.tmp-notours", ".other.tmp-h-1-x", "out.tmp-h-1-x"]
        for name in (live, foreign, *unrelated):
            (tmp_path / name).mkdir()
        with caplog.at_level(logging.WARNING, logger="fairseq_ext.io_utils"):
            with atomic_output_dir(out) as tmp:
                (tmp / "f").write_text("x")
        assert sorted(os.listdir(tmp_path)) == sorted([live, foreign, *unrelated, "out"])
        assert sorted(r.getMessage() for r in caplog.records) == sorted([
            f"{out}: left {foreign} alone: written from host otherhost, whose processes are not visible here",
            f"{out}: left {live} alone: process {sleeper.pid} is still writing it"])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert check_output_dir(out, overwrite=True) is None
    assert sorted(os.listdir(tmp_path)) == sorted([foreign, *unrelated, "out"])  # its process is gone now


def test_error_inside_removes_the_temporary_and_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("old")
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "f").write_text("new")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out"] and (out / "f").read_text() == "old"


def test_the_new_output_is_fsynced_before_it_is_published(tmp_path, monkeypatch):
    synced, published = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    real_publish = io_utils._publish
    monkeypatch.setattr(io_utils, "_publish", lambda tmp, out: (published.append(list(synced)), real_publish(tmp, out)))
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("x")
        (tmp / "g").write_text("y")
    [before] = published
    assert [Path(p).relative_to(tmp) for p in before] == [Path("sub/f"), Path("sub"), Path("g"), Path(".")]
    assert synced[-1] == str(tmp_path)  # and the rename itself


def test_a_failed_replacement_puts_the_old_output_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("old")
    monkeypatch.setattr(io_utils, "_exchange", lambda a, b: False)  # a system that cannot swap
    real_rename, calls = Path.rename, []

    def rename(self, target):  # out -> old works, tmp -> out is refused
        calls.append(Path(target).name)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(PermissionError), atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "f").write_text("new")
    assert calls[0].startswith(".out.old-") and calls[1:] == ["out", "out"]
    assert os.listdir(tmp_path) == ["out"] and (out / "f").read_text() == "old"


def test_a_killed_process_never_reaped_counts_as_dead(tmp_path):
    """A zombie (killed, not yet reaped: orphans in a container without init stay so) still answers kill(pid, 0)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        stat = Path(f"/proc/{proc.pid}/stat")
        for _ in range(500):
            if stat.read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"process {proc.pid} never became a zombie")
        os.kill(proc.pid, 0)  # no error: it is still there
        left = tmp_path / f".out.tmp-{io_utils._HOST}-{proc.pid}-abc123_x"
        left.mkdir()
        check_output_dir(out)
        assert not left.exists()
    finally:
        proc.wait()
