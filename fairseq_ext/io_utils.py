"""Output that appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fairseq_ext.errors import UserError


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse early an output directory that cannot be written: a file, a non-empty directory, under a file."""
    out_dir = Path(out_dir)
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
    existing ``out_dir`` is left untouched.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:  # unwritable, read-only or full: say which directory, not the temporary name
        raise UserError(f"{out_dir}: cannot create the output directory ({(exc.strerror or str(exc)).lower()})") \
            from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    os.chmod(out_dir, 0o755)
