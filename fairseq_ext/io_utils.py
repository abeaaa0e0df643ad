"""Output that appears whole or not at all, even when the process is killed (``kill -9``, power loss).

:func:`atomic_output_dir` writes everything into a hidden temporary directory
beside the output, ``.OUT.tmp-HOST-PID-XXXXXXXX``, fsyncs every file and
directory in it, and only then puts it in place with one rename. An existing
output (``--overwrite``) is swapped with the new one in one step (Linux
``renameat2(RENAME_EXCHANGE)``), so ``OUT`` is always the old complete output
or the new complete one. Where the system cannot swap, the old output is first
renamed to ``.OUT.old-HOST-PID-XXXXXXXX``; a kill between the two renames
leaves no ``OUT``, and the next run restores the old one.

A killed run cannot clean up. The next run writing the same ``OUT`` (its
:func:`check_output_dir`) removes what a dead process on this host left beside
it and logs each name; a temporary whose process still runs, or that another
host wrote (a shared file system), is left alone and reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fairseq_ext.errors import UserError

logger = logging.getLogger("fairseq_ext.io_utils")

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
# .OUT.tmp-HOST-PID-XXXXXXXX (mkdtemp's random part has no "-") and .OUT.old-HOST-PID-XXXXXXXX
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[^-]+$")


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse early an output directory that cannot be written: a file, a non-empty directory, under a file.

    First deals with what an interrupted run left beside it (see :func:`recover_output_dir`).
    """
    out_dir = Path(out_dir)
    recover_output_dir(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir}: directory exists and is not empty (pass --overwrite to replace it)")
    parent = next((p for p in out_dir.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{out_dir}: cannot create it, {parent} is a file, not a directory")


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; it becomes ``out_dir`` on success.

    On any error (or Ctrl-C) the temporary directory is removed and an
    existing ``out_dir`` is left untouched; after a kill, the next run removes it.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{_HOST}-{os.getpid()}-", dir=out_dir.parent))
    except OSError as exc:  # unwritable, read-only or full: say which directory, not the temporary name
        raise UserError(f"{out_dir}: cannot create the output directory ({(exc.strerror or str(exc)).lower()})") \
            from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700, before anyone can see it under its final name
        _fsync_tree(tmp)  # the files' data is on disk before the rename that publishes them
        _publish(tmp, out_dir)
    except BaseException:  # tmp is the new output, or after a swap the old one: not wanted either way
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out_dir: Path) -> None:
    """Put the complete directory ``tmp`` at ``out_dir``, replacing an existing one in a single step."""
    if not os.path.lexists(out_dir):
        tmp.rename(out_dir)
        fsync_dir(out_dir.parent)
        return
    if _exchange(tmp, out_dir):  # out_dir is now the new output, tmp holds the old one
        old = tmp
    else:  # no atomic swap here: a kill between the renames leaves the old output for the next run to restore
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name.rsplit('.tmp-', 1)[1]}")
        out_dir.rename(old)
        try:
            tmp.rename(out_dir)
        except BaseException:
            old.rename(out_dir)
            raise
        old.rename(tmp)  # a temporary again: a kill while removing it never leaves half an "old" to restore
        old = tmp
    fsync_dir(out_dir.parent)
    if old.is_symlink():  # out_dir was a link to a directory: the link is replaced, its target kept
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def recover_output_dir(out_dir: str | os.PathLike) -> list[str]:
    """Clean up beside ``out_dir`` after runs that were killed while writing it; one line per entry, logged.

    A dead process's temporary is removed; its old output (from a replacement cut
    between two renames) is restored when ``out_dir`` is missing, else removed.
    Temporaries of live processes, or of processes on other hosts, are left and reported.
    """
    out_dir = Path(out_dir)
    try:
        entries = sorted(out_dir.parent.iterdir()) if out_dir.parent.is_dir() else []
    except OSError:  # unreadable parent: check_output_dir and the write itself will say so
        return []
    report = []
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m is None or m["name"] != out_dir.name or not entry.is_dir() or entry.is_symlink():
            continue
        if m["host"] != _HOST:
            report.append(f"left {entry.name} alone: written from host {m['host']}, whose processes are not "
                          "visible here")
        elif _alive(int(m["pid"])):
            report.append(f"left {entry.name} alone: process {m['pid']} is still writing it")
        elif m["kind"] == "old" and not os.path.lexists(out_dir):
            entry.rename(out_dir)
            report.append(f"restored the previous output from {entry.name}, left by a run killed while replacing it")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done = "could not remove" if os.path.lexists(entry) else "removed"  # e.g. another user's files
            report.append(f"{done} {entry.name}, left by an interrupted run")
    for line in report:
        logger.warning(f"{out_dir}: {line}")
    return report


def leftovers(out_dir: str | os.PathLike) -> list[str]:
    """Names of the temporaries beside ``out_dir`` that :func:`atomic_output_dir` makes."""
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        return []
    return sorted(p.name for p in out_dir.parent.iterdir()
                  if (m := _LEFTOVER.match(p.name)) is not None and m["name"] == out_dir.name)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host) runs; a zombie (killed, never reaped: a container without an
    init process) does not."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # after the command name, which may hold spaces
    except (OSError, IndexError):  # no /proc (macOS): kill(0) is all there is
        return True
    return state not in (b"Z", b"X")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without RENAME_EXCHANGE (NFS)
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every directory (deepest first), so a rename publishes data."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def write_file_atomically(path: str | os.PathLike, write, suffix: str = ".tmp") -> None:
    """Call ``write(binary_file)`` on a temporary beside ``path`` (``.NAME.XXXX`` + ``suffix``), fsync and
    chmod it, rename it to ``path``, fsync the directory: ``path`` is the old file or the new one, never half."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``directory`` durable (where the platform can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that cannot sync a directory
        pass
    finally:
        os.close(fd)
