"""A dispatch mode that fails where a training step would make the host wait for a CUDA device, caught on CPU."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose result's size depends on the data: on CUDA the host must read it before going on
DATA_DEPENDENT = {torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default,
                  torch.ops.aten.unique_consecutive.default, torch.ops.aten._unique2.default}


class NoHostSync(TorchDispatchMode):
    """Fails on ``aten._local_scalar_dense`` (what ``int()``, ``float()``, ``bool()`` and ``.item()`` of a
    tensor run) and, with ``shapes=True``, on ops whose output size depends on the data (``nonzero``,
    boolean-mask indexing): each is a wait for the device on CUDA."""

    def __init__(self, shapes: bool = False):
        super().__init__()
        self.shapes = shapes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("a tensor was read on the host (int()/float()/bool()/.item())")
        if self.shapes and (func in DATA_DEPENDENT or _bool_index(func, args)):
            raise AssertionError(f"{func}: the size of its result depends on the data (a wait on CUDA)")
        return func(*args, **(kwargs or {}))


def _bool_index(func, args) -> bool:
    if func not in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default):
        return False
    return any(i is not None and i.dtype == torch.bool for i in args[1])
