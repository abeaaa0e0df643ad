"""Save and exit 0 on SIGUSR1 / SIGTERM, and requeue the Slurm job on SIGUSR1.

A cluster stops jobs with a warning signal (``sbatch --signal=USR1@180``) or SIGTERM (preemption,
``scancel``, the time limit). fairseq has no handler, so every rank dies without saving. Here:

1. The handler only records the signal (nothing else is safe inside a handler). A second signal acts
   as it always did (kills), except the same signal again within :data:`DUPLICATE_WINDOW_S` seconds:
   one signal often arrives twice (a group-wide ``kill``, ``timeout`` or Slurm reaching a rank both
   directly and through the process that spawned it, which passes its signals on to its ranks).
2. At every update boundary (fairseq's ``validate_and_save``, which every rank calls after the same
   update) the ranks agree: one process reads its own flag; with ``torch.distributed`` initialised,
   the signal numbers are all-reduced (MAX), so every rank stops after the same update even when
   only some of them got the signal.
3. Every rank saves through fairseq's own ``checkpoint_utils.save_checkpoint`` (``checkpoint_last.pt``
   with the epoch iterator's position in ``extra_state["train_iterator"]``, so the same command
   resumes at that update and that point of the data), skips validation (the warning time is
   short), logs one line and returns ``should_stop=True``: fairseq ends the run and exits 0.
4. On SIGUSR1 with ``SLURM_JOB_ID`` set, rank 0 runs ``scontrol requeue JOB`` once every rank has
   saved; its outcome is logged and a failure does not change the exit status. SIGTERM never
   requeues: it is what ``scancel`` sends, and a cancelled job must stay cancelled (Slurm's own
   preemption requeues by itself when it is set up to).

The handlers are installed only in a process that runs fairseq's training loop (``fairseq-train``,
``python -m fairseq_cli.train``, ``fairseq-hydra-train``, a spawned rank of these), never for the
``fairseq-ext`` verbs nor a plain ``import fairseq_ext`` (a notebook keeps its own signal handling).
A script that imports ``fairseq_cli.train`` after ``fairseq_ext`` calls ``fairseq_ext.register()``
again (the table of :mod:`fairseq_ext.runtime.patches`, entry ``fairseq_cli.train:validate_and_save``).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
REQUEUE_SIGNAL = signal.SIGUSR1
_requested = 0  # the first signal received (its number), 0 when none
_previous: dict[int, object] = {}  # the handlers there before ours, restored on a second request
_forward: list[int] = []  # ranks this process spawned, which get the signals it receives
_first_at = 0.0  # time.monotonic() of the first signal
DUPLICATE_WINDOW_S = 2.0  # the same signal again within this many seconds is the same request


def requested() -> int:
    """The number of the signal received by this process so far, 0 when none."""
    return _requested


def _handle(signum: int, _frame) -> None:
    global _requested, _first_at
    now = time.monotonic()
    for pid in _forward:
        try:
            os.kill(pid, signum)
        except OSError:  # that rank has already exited
            pass
    if not _requested:
        _requested, _first_at = signum, now
        return
    if signum == _requested and now - _first_at < DUPLICATE_WINDOW_S:
        return  # the first signal again, e.g. both directly and passed on by a parent
    for sig, handler in _previous.items():  # a second request: act as before (the default kills)
        signal.signal(sig, handler)
    os.kill(os.getpid(), signum)


def forward_to(pids: list[int]) -> None:
    """Pass the signals this process receives on to ``pids``: the ranks it spawned (fairseq's spawn), which
    a ``kill`` of the parent would not reach. Where the ranks get the signal themselves as well (Slurm,
    a process-group kill), the copy arrives within the duplicate window and changes nothing."""
    _forward[:] = pids


def install_handlers() -> bool:
    """Catch SIGUSR1 and SIGTERM in this process (idempotent; only the main thread can)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return bool(_previous)
    for sig in SIGNALS:
        _previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _handle)
    return True


def stop_on_signal(validate_and_save):
    """fairseq_cli.train's ``validate_and_save`` that saves and stops at the first update boundary after
    SIGUSR1/SIGTERM; the handlers that record the signal are installed with it (:func:`install_handlers`)."""

    @functools.wraps(validate_and_save)
    def wrapper(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
        signum = agreed_signal(trainer)
        if not signum:
            return validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)
        save_and_stop(cfg, trainer, epoch_itr, signum)
        return [None], True

    install_handlers()
    return wrapper


def agreed_signal(trainer) -> int:
    """The signal every rank acts on at this update boundary (0: go on).

    One process: its own flag, no communication. Several: the MAX of every rank's signal number.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return _requested
    import torch

    flag = torch.tensor([_requested], dtype=torch.int64, device=trainer.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def save_and_stop(cfg, trainer, epoch_itr, signum: int) -> None:
    """Save through fairseq's own checkpoint writer, log one line, and requeue if this rank should."""
    import torch.distributed as dist
    from fairseq import checkpoint_utils

    name = signal.Signals(signum).name
    updates = trainer.get_num_updates()
    path = checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        dist.barrier()  # every rank has written its part before the job may be requeued (and killed)
    rank = dist.get_rank() if distributed else 0
    source = "received" if _requested else "another rank received"
    where = f"saved {path}" if path else ("not saved (--no-save)" if cfg.checkpoint.no_save
                                          else "checkpoint saved by rank 0")
    logger.info(f"{source} {name}: stopped after update {updates}, {where}; exiting")
    if rank == 0 and signum == REQUEUE_SIGNAL:
        requeue()


def requeue_command(env: Mapping[str, str]) -> list[str] | None:
    """``scontrol requeue JOB`` for the Slurm job this process belongs to, None outside Slurm.

    >>> requeue_command({"SLURM_JOB_ID": "42"})
    ['scontrol', 'requeue', '42']
    >>> requeue_command({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"})
    ['scontrol', 'requeue', '40_3']
    >>> requeue_command({}) is None
    True
    """
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return ["scontrol", "requeue", job]


def requeue(env: Mapping[str, str] | None = None) -> bool | None:
    """Run ``scontrol requeue`` for this Slurm job and log the outcome; None outside Slurm.

    A failure (no ``scontrol``, a refusal, a timeout) is logged, never raised: the checkpoint is saved.
    """
    env = os.environ if env is None else env
    command = requeue_command(env)
    if command is None:
        return None
    try:  # scontrol is looked up on env's PATH
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=dict(env))
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning(f"`{' '.join(command)}` failed ({type(exc).__name__}: {exc}); the job is not requeued")
        return False
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().replace("\n", " ") or f"exit status {proc.returncode}"
        logger.warning(f"`{' '.join(command)}` failed ({reason}); the job is not requeued")
        return False
    logger.info(f"`{' '.join(command)}`: job requeued; it resumes from the checkpoint when it starts again")
    return True
