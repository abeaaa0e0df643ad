"""fairseq's own spawn of one rank per device (``--distributed-world-size N`` without a launcher), as the
plugin runs it: on CPU too (N processes, not the CUDA count), SIGUSR1/SIGTERM sent to the parent passed on
to every rank, and a user error in a rank kept one line in the parent instead of the rank's traceback."""

from __future__ import annotations

from fairseq_ext.errors import UserError


def spawn(cfg, main, kwargs, nprocs: int) -> None:
    """fairseq's spawn of one process per device (``nprocs`` counted without GPUs on CPU), with
    SIGUSR1/SIGTERM sent to this parent process passed on to the ranks (see :mod:`fairseq_ext.runtime.signals`)."""
    import torch

    from fairseq_ext.runtime import signals

    dt = cfg.distributed_training
    start_rank = dt.distributed_rank
    dt.distributed_rank = None  # distributed_main numbers the processes from start_rank
    context = torch.multiprocessing.spawn(fn=rank_main,
                                          args=(main, cfg, {**kwargs, "start_rank": start_rank}),
                                          nprocs=nprocs, join=False)
    signals.forward_to([p.pid for p in context.processes])
    try:
        while not context.join():
            pass
    except torch.multiprocessing.ProcessRaisedException as exc:
        user_error = user_error_in(str(exc))
        if user_error is None:
            raise
        raise user_error from None  # one line, as in a single process, not the rank's traceback
    finally:
        signals.forward_to([])


def rank_main(i: int, main, cfg, kwargs) -> None:
    """One spawned rank: fairseq's ``distributed_main`` (it ends with a barrier), then the process group
    released (:func:`release_process_group`)."""
    from fairseq.distributed import utils as distributed_utils

    distributed_utils.distributed_main(i, main, cfg, kwargs)
    release_process_group()


def release_process_group() -> None:
    """Destroy the default process group once a rank's training has returned. Left to the interpreter's exit,
    gloo's worker threads can outlive it: ``terminate called without an active exception``, the rank aborts
    and Slurm marks a finished job FAILED (seen on the local Slurm; pytorch/pytorch#190489). Only after a
    normal return: after an error the other ranks may still be in a collective, where destroying would hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def user_error_in(report: str) -> UserError | None:
    """The :class:`UserError` a spawned rank raised, from the traceback torch passes to the parent.

    >>> user_error_in("Traceback ...\\nfairseq_ext.errors.UserError: data: no tokenizer.json\\n")
    UserError('data: no tokenizer.json')
    >>> user_error_in("Traceback ...\\nRuntimeError: boom") is None
    True
    """
    import importlib

    lines = [ln for ln in report.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    name, _, message = lines[-1].partition(": ")
    module, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name) if module else None
    except (ImportError, ValueError, AttributeError):  # not a class we can name: not a user error of ours
        return None
    return UserError(message) if isinstance(cls, type) and issubclass(cls, UserError) else None
