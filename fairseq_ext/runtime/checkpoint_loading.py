"""fairseq's checkpoint reader behind the allow-list, and the trainer's task asked before weights load.

fairseq's ``checkpoint_utils`` gets a ``torch`` whose ``load`` is
:func:`fairseq_ext.serialization.safe_torch_load` (``weights_only=True`` with exactly the
types fairseq checkpoints hold), so ``fairseq-train`` resumes from its own checkpoints under
torch >= 2.6 without ever unpickling arbitrary objects.

When fairseq's trainer loads a checkpoint into a task's model, the task is asked first
(``task.check_checkpoint(state, path)``, see :mod:`fairseq_ext.tasks.base`), so a checkpoint
made with another tokenizer stops with one line naming both.
"""

from __future__ import annotations

import contextvars
import functools
import types

import torch

from fairseq_ext.errors import report_user_errors_in_one_line
from fairseq_ext.serialization import safe_torch_load

# fairseq's training entry points, whose UserErrors become one line (see install)
TRAINING_PROGRAMS = ("fairseq-train", "fairseq-hydra-train", "train.py", "hydra_train.py")


class _TorchWithSafeLoad(types.ModuleType):
    """Stands in for ``torch`` inside fairseq.checkpoint_utils: same module, safe ``load``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        from fairseq_ext.runtime.checkpoint_files import take_already_read

        state = take_already_read(f)  # read once already while choosing which checkpoint to resume from
        return state if state is not None else safe_torch_load(f, map_location=map_location, **kwargs)


# The task whose model fairseq's trainer is loading a checkpoint into (None outside Trainer.load_checkpoint).
_LOADING_FOR_TASK: contextvars.ContextVar = contextvars.ContextVar("fairseq_ext_loading_for_task", default=None)


def _checked_load_checkpoint_to_cpu(load):
    """fairseq's ``load_checkpoint_to_cpu``, then the loading task's ``check_checkpoint``."""

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        state = load(path, *args, **kwargs)
        check = getattr(_LOADING_FOR_TASK.get(), "check_checkpoint", None)
        if check is not None:
            check(state, path)
        return state

    load_checkpoint_to_cpu.fairseq_ext_checked = True
    return load_checkpoint_to_cpu


def _load_checkpoint_for_task(load_checkpoint):
    """``Trainer.load_checkpoint`` that lets the checkpoint reader know the trainer's task."""

    @functools.wraps(load_checkpoint)
    def wrapper(self, filename, *args, **kwargs):
        token = _LOADING_FOR_TASK.set(self.task)
        try:
            return load_checkpoint(self, filename, *args, **kwargs)
        finally:
            _LOADING_FOR_TASK.reset(token)

    wrapper.fairseq_ext_checked = True
    return wrapper


def install() -> None:
    """Route fairseq's checkpoint reading through :func:`safe_torch_load`, let the trainer's task check
    a checkpoint before its weights are loaded, make checkpoint writes atomic and a torn
    ``checkpoint_last.pt`` fall back (:mod:`fairseq_ext.runtime.checkpoint_files`), and report user errors
    of the training commands in one line (idempotent)."""
    import os
    import sys

    from fairseq import checkpoint_utils
    from fairseq.trainer import Trainer

    from fairseq_ext.runtime import checkpoint_files

    if not isinstance(checkpoint_utils.torch, _TorchWithSafeLoad):
        checkpoint_utils.torch = _TorchWithSafeLoad()
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "fairseq_ext_checked", False):
        checkpoint_utils.load_checkpoint_to_cpu = _checked_load_checkpoint_to_cpu(
            checkpoint_utils.load_checkpoint_to_cpu)
    if not getattr(Trainer.load_checkpoint, "fairseq_ext_checked", False):
        Trainer.load_checkpoint = _load_checkpoint_for_task(Trainer.load_checkpoint)
    checkpoint_files.install()
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in TRAINING_PROGRAMS:
        report_user_errors_in_one_line("fairseq-train" if program == "train.py" else program)
