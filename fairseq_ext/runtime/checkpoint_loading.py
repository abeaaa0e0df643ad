"""fairseq's checkpoint reader behind the allow-list, and the trainer's task asked before weights load.

fairseq's ``checkpoint_utils`` gets a ``torch`` whose ``load`` is
:func:`fairseq_ext.serialization.safe_torch_load` (``weights_only=True`` with exactly the
types fairseq checkpoints hold), so ``fairseq-train`` resumes from its own checkpoints under
torch >= 2.6 without ever unpickling arbitrary objects.

When fairseq's trainer loads a checkpoint into a task's model, the task is asked first
(``task.check_checkpoint(state, path)``, see :mod:`fairseq_ext.tasks.base`), so a checkpoint
made with another tokenizer stops with one line naming both. The same (single) wrapper of
``Trainer.load_checkpoint`` first lets :mod:`fairseq_ext.runtime.checkpoint_files` choose the
checkpoint a resume reads (a torn ``checkpoint_last.pt`` falls back to the newest readable one).
"""

from __future__ import annotations

import contextvars
import functools
import types

import torch

from fairseq_ext.runtime import checkpoint_files
from fairseq_ext.serialization import safe_torch_load


class TorchWithLoad(types.ModuleType):
    """Stands in for ``torch`` inside one fairseq module: the same module, with its own ``load``."""

    def __init__(self, load):
        super().__init__("torch")
        self.load = load

    def __getattr__(self, name):
        return getattr(torch, name)


def _checkpoint_load(f, map_location=None, **kwargs):
    """``torch.load`` as fairseq's checkpoint reader gets it: the allow-list, and a state already read
    while choosing which checkpoint to resume from handed over instead of a second read."""
    state = checkpoint_files.take_already_read(f)
    return state if state is not None else safe_torch_load(f, map_location=map_location, **kwargs)


def torch_with_safe_load(_torch) -> TorchWithLoad:
    """The ``torch`` of ``fairseq.checkpoint_utils``."""
    return TorchWithLoad(_checkpoint_load)


# The task whose model fairseq's trainer is loading a checkpoint into (None outside Trainer.load_checkpoint).
_LOADING_FOR_TASK: contextvars.ContextVar = contextvars.ContextVar("fairseq_ext_loading_for_task", default=None)


def checked_load_checkpoint_to_cpu(load):
    """fairseq's ``load_checkpoint_to_cpu``, then the loading task's ``check_checkpoint``."""

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        state = load(path, *args, **kwargs)
        check = getattr(_LOADING_FOR_TASK.get(), "check_checkpoint", None)
        if check is not None:
            check(state, path)
        return state

    return load_checkpoint_to_cpu


def trainer_load_checkpoint(load_checkpoint):
    """``Trainer.load_checkpoint`` that loads the checkpoint a resume should start from (None: start
    fresh, see :func:`fairseq_ext.runtime.checkpoint_files.resume_from`) and lets the checkpoint reader
    know the trainer's task."""

    @functools.wraps(load_checkpoint)
    def wrapper(self, filename, *args, **kwargs):
        try:
            filename = checkpoint_files.resume_from(self, filename)
            if filename is None:
                return None
            token = _LOADING_FOR_TASK.set(self.task)
            try:
                return load_checkpoint(self, filename, *args, **kwargs)
            finally:
                _LOADING_FOR_TASK.reset(token)
        finally:
            checkpoint_files.forget_already_read()

    return wrapper
