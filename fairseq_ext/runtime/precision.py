"""``--bf16`` means bfloat16 training on CUDA or CPU, not TPU.

fairseq 0.12 turns ``--bf16`` (and ``--memory-efficient-bf16``) into ``--tpu``
when it parses the command line (``fairseq/options.py``, fairseq issue #4696):
the trainer then asks ``torch_xla`` for a device, so ``--bf16`` cannot run on a
GPU or a CPU. fairseq's own bf16 machinery is otherwise device-neutral: the
trainer casts the model and the float tensors of every batch to
``torch.bfloat16`` and builds ``FP16Optimizer`` (fp32 master weights) or
``MemoryEfficientFP16Optimizer``, both of which skip loss scaling for bf16.

:func:`untie_if_implied` runs first in the wrapper of ``fairseq.distributed.utils.call_main``
(:mod:`fairseq_ext.runtime.launch`), the one function that ``fairseq-train`` (and
``fairseq-hydra-train``) hands the parsed config to before anything reads ``common.tpu``
(distributed set-up, spawned workers, the trainer, the optimizer). There, when the command line has ``--bf16`` (or
``--memory-efficient-bf16``) but not ``--tpu``, ``tpu`` is set back to False in
every config group. ``--fp16``, an explicit ``--tpu`` and Hydra configs (where
``common.bf16=true`` never implied a TPU) are left as they are.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def bf16_implied_tpu(argv: list[str]) -> bool:
    """Whether fairseq's argument parsing turned this command line's bf16 into ``tpu``: ``--bf16`` or
    ``--memory-efficient-bf16`` without ``--tpu``. A Hydra config (``common.bf16=true``) never does.

    >>> bf16_implied_tpu(["data", "--bf16"]), bf16_implied_tpu(["data", "--bf16", "--tpu"])
    (True, False)
    >>> bf16_implied_tpu(["--config-dir", "scripts/hydra", "common.bf16=true"])
    False
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--bf16", "--memory-efficient-bf16", "--tpu"):
        parser.add_argument(flag, action="store_true")
    flags = parser.parse_known_args(argv)[0]
    return (flags.bf16 or flags.memory_efficient_bf16) and not flags.tpu


def untie_bf16_from_tpu(cfg) -> None:
    """Set ``tpu`` to False in every config group that has it; log the device bf16 runs on.

    The groups hold copies, not references to ``common.tpu``: ``distributed_training.tpu`` (read by
    the distributed set-up and the DDP wrapper), ``optimizer.tpu`` (Adam), those of some tasks and
    criterions, and the whole argument namespace of models configured by ``add_args`` (RoBERTa, BART).
    """
    for name in cfg:
        group = cfg[name]
        if isinstance(group, argparse.Namespace):  # the model group of a model without a dataclass
            group = vars(group)
        if hasattr(group, "keys") and "tpu" in group:
            group["tpu"] = False
    import torch

    device = "cuda" if torch.cuda.is_available() and not cfg.common.cpu else "cpu"
    logger.info("--bf16: training in torch.bfloat16 on %s, not on a TPU (pass --tpu for a TPU)", device)


def untie_if_implied(cfg) -> None:
    """Undo ``tpu`` where fairseq's argument parsing set it for ``--bf16`` (this command line's).
    Called first by the ``call_main`` of :mod:`fairseq_ext.runtime.launch`, before anything reads ``common.tpu``."""
    if bf16_implied_tpu(sys.argv[1:]):
        untie_bf16_from_tpu(cfg)
