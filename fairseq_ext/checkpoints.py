"""Load fairseq checkpoints under torch >= 2.6 without loading arbitrary pickles.

torch 2.6 made ``torch.load`` default to ``weights_only=True``, which refuses
the Python objects fairseq stores beside the tensors (an ``argparse.Namespace``
or omegaconf config, numpy scalars in the meters), so ``fairseq-train`` can no
longer resume from its own ``checkpoint_last.pt``. Turning ``weights_only``
off would let a checkpoint run any code while it unpickles.

Instead, fairseq's checkpoint reader gets a ``torch.load`` that keeps
``weights_only=True`` and allows exactly the types fairseq checkpoints hold
(:data:`ALLOWED_GLOBALS`). Anything else, e.g. an object whose unpickling
would call a function, is refused with :class:`CheckpointRefusedError`.

Every checkpoint fairseq_ext writes records its tokenizer's identity under
``task_state["tokenizer"]`` (:func:`tokenizer_task_state`). When fairseq's
trainer loads a checkpoint into a task's model, the task is asked first
(``task.check_checkpoint(state, path)``, see :mod:`fairseq_ext.tasks.tokenizer_data`),
so a checkpoint made with another tokenizer stops with one line naming both.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import functools
import pickle
import re
import types
from typing import Any

import numpy as np
import torch

from fairseq_ext.errors import UserError, report_user_errors_in_one_line
from fairseq_ext.tokenizer import TokenizerIdentity

TOKENIZER_STATE_KEY = "tokenizer"
# fairseq's training entry points, whose UserErrors become one line (see install)
TRAINING_PROGRAMS = ("fairseq-train", "fairseq-hydra-train", "train.py", "hydra_train.py")


class CheckpointRefusedError(UserError, pickle.UnpicklingError):
    """A checkpoint holds a pickled object that fairseq checkpoints never hold.

    ``global_name`` is the forbidden type it references, or None when the bytes do not unpickle at all
    (garbage, which :mod:`fairseq_ext.checkpoint_files` treats as a damaged file).
    """

    def __init__(self, message: str, global_name: str | None = None):
        super().__init__(message)
        self.global_name = global_name


def _numpy_globals() -> list:
    """numpy scalars and dtypes as they are pickled (e.g. ``best_loss`` as np.float64)."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
        np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)]
    return [scalar, np.dtype, *dtype_classes]


def _omegaconf_globals() -> list:
    """Types an omegaconf ``DictConfig`` pickles into (fairseq's ``cfg``)."""
    from omegaconf import DictConfig, ListConfig, base, nodes

    node_types = [getattr(nodes, n) for n in (
        "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
        "BytesNode", "PathNode", "ValueNode") if hasattr(nodes, n)]
    # Metadata records key/element types as values: the plain builtin types, never called.
    type_values = [dict, list, int, float, bool, str, bytes, collections.defaultdict]
    return [DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, *node_types, *type_values]


# What fairseq checkpoints hold besides tensors and plain containers: the legacy
# ``args`` Namespace, omegaconf configs (checkpoints of other fairseq releases keep
# ``cfg`` as a DictConfig) and numpy scalars (meter values, ``best``).
ALLOWED_GLOBALS: list = [argparse.Namespace, Any, *_numpy_globals()]


def allowed_globals() -> list:
    """Everything a fairseq checkpoint may reference beyond what torch allows by itself."""
    return ALLOWED_GLOBALS + _omegaconf_globals()


def safe_torch_load(f, map_location=None, extra_globals=(), **kwargs):
    """``torch.load`` with ``weights_only=True`` and fairseq's types allowed (and ``extra_globals``:
    the placeholder type of fairseq's rank-0-to-all broadcast, see :mod:`fairseq_ext.distributed`)."""
    kwargs.pop("weights_only", None)
    name = getattr(f, "name", f)
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: the old, unchecked behaviour
        return torch.load(f, map_location=map_location, **kwargs)
    with torch.serialization.safe_globals(allowed_globals() + list(extra_globals)):
        try:
            return torch.load(f, map_location=map_location, weights_only=True, **kwargs)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
            raise CheckpointRefusedError(
                f"{name}: refused to load checkpoint: {_reason(exc)} "
                "(fairseq_ext loads checkpoints with weights_only=True and never unpickles arbitrary objects)",
                found.group(1) if found else None,
            ) from None


def _reason(exc: Exception) -> str:
    """The offending global, out of torch's many-line message."""
    text = str(exc)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return f"it references {found.group(1)}, which is not among the types fairseq checkpoints hold"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class _TorchWithSafeLoad(types.ModuleType):
    """Stands in for ``torch`` inside fairseq.checkpoint_utils: same module, safe ``load``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        from fairseq_ext.checkpoint_files import take_already_read

        state = take_already_read(f)  # read once already while choosing which checkpoint to resume from
        return state if state is not None else safe_torch_load(f, map_location=map_location, **kwargs)


def tokenizer_task_state(identity: TokenizerIdentity) -> dict:
    """The ``task_state`` entry that records a checkpoint's tokenizer."""
    return {TOKENIZER_STATE_KEY: identity.to_dict()}


def recorded_tokenizer(state: dict, path) -> TokenizerIdentity | None:
    """The tokenizer a checkpoint records, or ``None`` for one written before identities were recorded."""
    recorded = (state.get("task_state") or {}).get(TOKENIZER_STATE_KEY)
    if recorded is None:
        return None
    try:
        return TokenizerIdentity.from_dict(recorded)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: task_state.{TOKENIZER_STATE_KEY} is not a tokenizer identity") from None


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
    ``checkpoint_last.pt`` fall back (:mod:`fairseq_ext.checkpoint_files`), and report user errors
    of the training commands in one line (idempotent)."""
    import os
    import sys

    from fairseq import checkpoint_utils
    from fairseq.trainer import Trainer

    from fairseq_ext import checkpoint_files

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
