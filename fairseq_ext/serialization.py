"""Load fairseq checkpoints under torch >= 2.6 without loading arbitrary pickles (a leaf: torch, numpy only).

torch 2.6 made ``torch.load`` default to ``weights_only=True``, which refuses
the Python objects fairseq stores beside the tensors (an ``argparse.Namespace``
or omegaconf config, numpy scalars in the meters), so ``fairseq-train`` can no
longer resume from its own ``checkpoint_last.pt``. Turning ``weights_only``
off would let a checkpoint run any code while it unpickles.

Instead, :func:`safe_torch_load` keeps ``weights_only=True`` and allows exactly
the types fairseq checkpoints hold (:data:`ALLOWED_GLOBALS`). Anything else,
e.g. an object whose unpickling would call a function, is refused with
:class:`CheckpointRefusedError`. Every path that reads a checkpoint goes through
it: fairseq's own reader and its rank-0-to-all broadcast (see
:mod:`fairseq_ext.runtime`), conversion, evaluation and the tests.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
from typing import Any

import numpy as np
import torch

from fairseq_ext.errors import UserError


class CheckpointRefusedError(UserError, pickle.UnpicklingError):
    """A checkpoint holds a pickled object that fairseq checkpoints never hold.

    ``global_name`` is the forbidden type it references, or None when the bytes do not unpickle at all
    (garbage, which :mod:`fairseq_ext.runtime.checkpoint_files` treats as a damaged file).
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
    the placeholder type of fairseq's rank-0-to-all broadcast, see :mod:`fairseq_ext.runtime.launch`)."""
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
