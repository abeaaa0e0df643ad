"""Crash-safe checkpoint files: atomic writes and copies, fallback to the newest readable checkpoint.

fairseq 0.12 writes ``checkpoint_last.pt`` in place when it is not the first file
of a save: it writes e.g. ``checkpoint_1_4.pt``, then copies it over
``checkpoint_last.pt`` with ``shutil.copyfile``. A kill during that copy leaves a
torn ``checkpoint_last.pt``, and fairseq then refuses to start.

With the patches of :mod:`fairseq_ext.runtime.patches`:

* every checkpoint file (written or copied) goes to a hidden temporary name in
  the same directory (``.checkpoint_last.pt.<random>.tmp``), is flushed and
  fsynced, then renamed over the final name (``os.replace``), so a reader sees
  the old file or the new one, never half of one;
* on start, a ``checkpoint_last.pt`` that cannot be read (truncated, empty,
  garbage) is reported in one log line with the reason, and training resumes
  from the newest readable checkpoint in ``--save-dir`` (see :func:`candidates`),
  which is also copied over it; when none is readable it starts fresh with a
  warning. Temporaries left by a kill are removed. A resume whose checkpoint
  already reached ``--max-update`` ends at once, exit 0 (fairseq would train one update more).

Reading stays behind the torch >= 2.6 allow-list of :mod:`fairseq_ext.runtime.checkpoint_loading`;
a checkpoint refused for referencing a forbidden type is never skipped silently.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from fairseq_ext.io_utils import write_file_atomically

logger = logging.getLogger("fairseq_ext.runtime.checkpoint_files")

TMP_SUFFIX = ".tmp"
# Our temporaries (".checkpoint_last.pt.x1y2.tmp") and fairseq's own ("checkpoint_last.pt.tmp").
_TEMPORARY = re.compile(r"^(\.checkpoint.*\.pt\..*|checkpoint.*\.pt)\.tmp$")
_UPDATES_IN_NAME = re.compile(r"^checkpoint_\d+_(\d+)")
# torch.save's zip archive, or the legacy format (a pickle, protocol 2)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02")

# States read while choosing a checkpoint, handed to fairseq's own read of the same file (read once).
_ALREADY_READ: dict = {}


def _write_atomically(path: str, write) -> None:
    """Call ``write(binary_file)`` on a temporary beside ``path``, fsync it, rename it to ``path``."""
    write_file_atomically(path, write, suffix=TMP_SUFFIX)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one."""
    _write_atomically(os.fspath(path), lambda f: torch.save(obj, f))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Copy ``src`` to ``dst`` through a temporary and a rename; True as ``PathManager.copy`` returns."""
    with open(src, "rb") as source:
        _write_atomically(os.fspath(dst), lambda f: shutil.copyfileobj(source, f, 16 << 20))
        st = os.fstat(source.fileno())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))  # a copy is as new as what it copies (see candidates)
    return True


def remove_temporaries(save_dir: str | os.PathLike) -> list[str]:
    """Remove checkpoint temporaries a killed run left in ``save_dir``; their names."""
    save_dir = Path(save_dir)
    removed = []
    if save_dir.is_dir():
        for entry in save_dir.iterdir():
            if _TEMPORARY.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
    return sorted(removed)


def candidates(save_dir: str | os.PathLike, suffix: str = "") -> list[Path]:
    """fairseq's checkpoint files in ``save_dir``, newest first: by mtime (a copy keeps its source's);
    files of one save by kind (last, interval, epoch, best), interval ones by the update count in the name."""
    pattern = re.compile(r"^checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+)" + re.escape(suffix) + r"\.pt$")
    found = [p for p in Path(save_dir).glob("checkpoint*.pt") if pattern.match(p.name) and p.is_file()]

    def newest(p: Path):
        updates = _UPDATES_IN_NAME.match(p.name)
        kind = 3 if p.name == f"checkpoint_last{suffix}.pt" else 2 if updates else 0 if "best" in p.name else 1
        return p.stat().st_mtime_ns, kind, int(updates.group(1)) if updates else -1

    return sorted(found, key=newest, reverse=True)


def why_unreadable(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(state, None)`` for a checkpoint that reads, ``(None, reason)`` for a torn or garbled one.

    A checkpoint refused for referencing a forbidden type raises: that is not damage.
    """
    from fairseq_ext.serialization import CheckpointRefusedError, safe_torch_load

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, "it is empty (0 bytes)"
        with open(path, "rb") as f:
            if not f.read(4).startswith(_TORCH_MAGIC):
                return None, "it is not a torch checkpoint (neither a zip archive nor a pickle)"
            f.seek(0)
            state = safe_torch_load(f, map_location="cpu")
    except CheckpointRefusedError as exc:
        if exc.global_name is not None:
            raise
        return None, "its pickled data is corrupt"
    except Exception as exc:  # noqa: BLE001 - whatever a torn file raises (RuntimeError, EOFError, OSError, ...)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = text.split(". ")[0][:160]
        return None, f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if not isinstance(state, dict) or "model" not in state:
        return None, "it holds no model state"
    return state, None


def choose_checkpoint(last: str | os.PathLike, suffix: str = "") -> str | None:
    """The checkpoint to resume from when ``last`` (checkpoint_last.pt) exists: itself when it reads,
    else the newest readable one in its directory (copied over ``last``), else None. A fallback is
    logged in one line naming every unreadable file and why."""
    last = Path(last)
    order = [last] + [p for p in candidates(last.parent, suffix) if p != last]
    unreadable = []
    for path in order:
        state, reason = why_unreadable(path)
        if state is None:
            unreadable.append(f"{path.name} ({reason})" if unreadable else reason)
            continue
        _ALREADY_READ[os.path.realpath(path)] = (_stamp(path), state)
        if path != last:  # resume from it, and repair checkpoint_last.pt for whoever reads it next
            atomic_copy(path, last)
            updates = (state.get("optimizer_history") or [{}])[-1].get("num_updates")
            logger.warning(f"{last}: unreadable, {unreadable[0]}; resuming from {path.name} ({updates} updates), "
                           f"copied to {last.name}" + _also(unreadable))
        return str(path)
    logger.warning(f"{last}: unreadable, {unreadable[0]}; no readable checkpoint in {last.parent}"
                   + _also(unreadable) + "; training starts fresh")
    return None


def _also(unreadable: list[str]) -> str:
    return f"; also unreadable: {', '.join(unreadable[1:])}" if len(unreadable) > 1 else ""


def _stamp(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def take_already_read(f):
    """The state :func:`choose_checkpoint` read from the file object ``f``, once; else None."""
    name = getattr(f, "name", f)
    if not isinstance(name, (str, os.PathLike)) or not _ALREADY_READ:
        return None
    entry = _ALREADY_READ.pop(os.path.realpath(name), None)
    if entry is None or entry[0] != _stamp(name):
        return None
    return entry[1]


def forget_already_read() -> None:
    """Drop the states read while choosing a checkpoint (fairseq has read what it needed of them)."""
    _ALREADY_READ.clear()


def resume_from(trainer, filename: str) -> str | None:
    """The checkpoint ``Trainer.load_checkpoint(filename)`` reads: ``filename`` itself, except when
    fairseq resumes from ``--save-dir`` (the default ``--restore-file``) and ``checkpoint_last.pt``
    exists: then :func:`choose_checkpoint`'s choice (None: start fresh). Rank 0 chooses, and removes
    the temporaries an interrupted save left; the other ranks get its choice."""
    cfg = trainer.cfg.checkpoint
    rank = trainer.data_parallel_rank
    if rank == 0 and cfg.save_dir:
        removed = remove_temporaries(cfg.save_dir)
        if removed:
            logger.info(f"{cfg.save_dir}: removed {len(removed)} temporary file(s) of an interrupted save")
    if cfg.restore_file != "checkpoint_last.pt" or not cfg.save_dir:  # an explicit --restore-file: no fallback
        return filename
    suffix = trainer.checkpoint_suffix or ""
    last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
    if os.path.abspath(filename) != os.path.abspath(last) or not os.path.isfile(last):
        return filename
    chosen = [choose_checkpoint(last, suffix) if rank == 0 else None]
    if trainer.data_parallel_world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(chosen, src=0)
    return chosen[0]


def stop_when_nothing_to_train(train):
    """``fairseq_cli.train.train`` (one epoch) that ends the run before its first update when it resumed
    from a checkpoint that already reached ``--max-update``: fairseq would train one update more and
    overwrite checkpoint_last.pt (a job requeued after its last save). The run then ends as a finished
    one does (exit 0); fairseq's library functions (``load_checkpoint``) are left as they are."""

    @functools.wraps(train)
    def wrapper(cfg, trainer, task, epoch_itr):
        max_update, updates = cfg.optimization.max_update, trainer.get_num_updates()
        if cfg.checkpoint.restore_file == "checkpoint_last.pt" and max_update and updates >= max_update:
            logger.info(f"{cfg.checkpoint.save_dir}: the checkpoint is at {updates} updates, --max-update "
                        f"{max_update} is reached; nothing to train")
            return [None], True  # fairseq's (valid_losses, should_stop)
        return train(cfg, trainer, task, epoch_itr)

    return wrapper


def atomic_persistent_save(original):
    """fairseq's ``torch_persistent_save`` writing local files atomically (async/remote ones as before)."""

    @functools.wraps(original)
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not isinstance(filename, (str, os.PathLike)) or "://" in os.fspath(filename):
            return original(obj, filename, async_write=async_write)
        return atomic_torch_save(obj, filename)

    return torch_persistent_save


def path_manager_with_atomic_copy(base):
    """fairseq's ``PathManager`` whose ``copy`` of local files goes through a temporary and a rename."""

    class AtomicCopyPathManager(base):
        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if "://" in f"{src_path}{dst_path}" or (os.path.exists(dst_path) and not overwrite):
                return base.copy(src_path, dst_path, overwrite=overwrite)
            return atomic_copy(src_path, dst_path)

    return AtomicCopyPathManager
