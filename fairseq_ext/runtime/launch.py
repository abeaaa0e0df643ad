"""Multi-process training launched the ways users launch it, on CUDA (nccl) and on CPU (gloo).

fairseq 0.12 derives the distributed set-up from the CUDA device count, so on CPU (and in some GPU
set-ups) it cannot start, or worse, starts something else than asked:

* ``torchrun --nproc-per-node 2 fairseq-train ... --cpu``: the world size defaults to the CUDA device
  count (1 without GPUs), and fairseq returns before it looks at torchrun's variables, so every process
  runs its own single-rank training into the same ``--save-dir`` and exits 0. With a world size given,
  the local device is ``rank % torch.cuda.device_count()``: a division by zero.
* ``srun`` with several tasks: the world size must be passed by hand (the default, the CUDA count, is 1
  when Slurm binds one GPU to each task, and training then runs on one rank per task, silently).
* fairseq's own spawn (``--distributed-world-size N``) asks for N CUDA devices and spawns
  ``min(cuda_count, N)`` processes: none on CPU.
* ``torch.cuda.set_device`` for local ranks > 0, and DDP given ``device_ids`` for a CPU module, which
  DDP refuses.
* On resume with several ranks, rank 0 broadcasts the checkpoint it read through a bare ``torch.load``
  (``_broadcast_object_slow``), which torch >= 2.6 refuses.

:func:`launching_call_main` wraps ``fairseq.distributed.utils.call_main`` (which ``fairseq-train`` and
``fairseq-hydra-train`` hand the parsed config to) so that, before fairseq's own inference (under
``fairseq-hydra-train`` only when ``fairseq_ext`` is imported before that call, which fairseq's hydra
entry point does not do: it loads ``common.user_dir`` later, in each process, so there fairseq's own
distributed set-up applies; single-process hydra runs are unaffected):

1. under torchrun (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``) or inside an ``srun``
   step of several tasks (``SLURM_STEP_NUM_TASKS``, ``SLURM_PROCID``), the world size, rank and local
   device come from the launcher, and nothing is spawned; under srun the rendezvous is the step's first
   node at ``--distributed-port``, or at a port derived from the job id (the same in every task)
   when none is given. A ``--distributed-world-size`` that disagrees with the launcher is overridden
   with a warning (stock fairseq overrode it silently under torchrun). Pipeline model parallelism keeps
   fairseq's own rules;
2. with ``--cpu`` (or without CUDA) and ``--distributed-world-size N > 1`` and no launcher, N
   processes are spawned on this machine (fairseq's own spawn, counted without GPUs); when this
   process spawns the ranks (on CPU or CUDA), SIGUSR1/SIGTERM sent to it reach every rank;
3. on CPU the backend is gloo (fairseq's default, nccl, needs GPUs).

It also makes DDP wrap a CPU module without ``device_ids`` and routes the rank-0-to-all broadcast of
a checkpoint through the same allow-list as single-process loading (:mod:`fairseq_ext.runtime.checkpoint_loading`).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import random
import socket
import subprocess
import sys
from dataclasses import dataclass

from fairseq_ext.errors import UserError
from fairseq_ext.runtime import precision
from fairseq_ext.runtime.spawn import release_process_group, spawn

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


@dataclass(frozen=True)
class Launch:
    """What a launcher says about this process."""

    launcher: str  # "torchrun" or "srun"
    world_size: int
    rank: int
    local_rank: int
    init_method: str | None  # None: derive from the first node and a port (srun)


def detect_launch(env: dict | os._Environ = os.environ) -> Launch | None:
    """The launcher that started this process as one rank of several, or None.

    >>> detect_launch({"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    Launch(launcher='torchrun', world_size=2, rank=1, local_rank=1, init_method='env://')
    >>> detect_launch({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"})
    Launch(launcher='srun', world_size=4, rank=3, local_rank=1, init_method=None)
    >>> detect_launch({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) is None  # a batch script, not a step
    True
    """
    if all(name in env for name in TORCHRUN_VARIABLES):
        world = _int_variable(env, "WORLD_SIZE")
        if world > 1:
            return Launch("torchrun", world, _int_variable(env, "RANK"),
                          _int_variable(env, "LOCAL_RANK", _int_variable(env, "RANK")), "env://")
        return None
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = _int_variable(env, "SLURM_STEP_NUM_TASKS")
        if world > 1:
            return Launch("srun", world, _int_variable(env, "SLURM_PROCID"),
                          _int_variable(env, "SLURM_LOCALID", 0), None)
    return None


def _int_variable(env, name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def explicit_world_size(argv: list[str]) -> int | None:
    """The ``--distributed-world-size`` given on the command line, or None.

    >>> explicit_world_size(["data", "--distributed-world-size", "4"]), explicit_world_size(["data"])
    (4, None)
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--distributed-world-size", "--world-size", type=int, default=None)
    try:
        return parser.parse_known_args(argv)[0].distributed_world_size
    except SystemExit:  # not an integer: fairseq's own parser has already said so
        return None


def slurm_port(job_id: str | None, step_id: str | None = None) -> int:
    """A port every task of a job step derives alike (fairseq's rule for one node, with the step mixed in,
    so that two steps of one job running at once do not meet at the same port)."""
    if job_id is None:
        raise UserError("--distributed-port: not given, and SLURM_JOB_ID is not set to derive one")
    seed = int(job_id) if not (step_id or "").isdigit() else int(job_id) * 1000 + int(step_id)
    return random.Random(seed).randint(10000, 60000)


def first_node(node_list: str) -> str:
    """The first host of a Slurm node list (``scontrol show hostnames``)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", node_list], capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(f"SLURM_STEP_NODELIST={node_list!r}: `scontrol show hostnames` failed ({exc})") from None
    if not out:
        raise UserError(f"SLURM_STEP_NODELIST={node_list!r} names no host")
    return out[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apply_launch(cfg, launch: Launch, env=os.environ) -> None:
    """Set the distributed config of one rank from its launcher."""
    import torch

    dt = cfg.distributed_training
    explicit = explicit_world_size(sys.argv[1:])
    if explicit is not None and explicit != launch.world_size and launch.rank == 0:
        logger.warning(f"--distributed-world-size {explicit}: {launch.launcher} started {launch.world_size} "
                       f"processes; training with {launch.world_size} (leave the option out, the launcher sets it)")
    init_method = launch.init_method
    if init_method is None:  # srun: the step's first node
        port = dt.distributed_port if dt.distributed_port > 0 else slurm_port(env.get("SLURM_JOB_ID"),
                                                                               env.get("SLURM_STEP_ID"))
        host = first_node(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost")
        init_method = f"tcp://{host}:{port}"
    cuda = not cfg.common.cpu and torch.cuda.is_available()
    dt.distributed_init_method = init_method
    dt.distributed_world_size = launch.world_size
    dt.distributed_rank = launch.rank
    dt.distributed_no_spawn = True  # the launcher started every process
    dt.device_id = launch.local_rank % torch.cuda.device_count() if cuda else 0
    if launch.rank == 0:
        logger.info("%s: %d processes, %s, rendezvous %s", launch.launcher, launch.world_size,
                    f"CUDA device {dt.device_id} on rank 0" if cuda else "CPU", init_method)


def _one_task_per_node_spawning_gpus(launch: Launch, cpu: bool, env=os.environ) -> bool:
    """srun with one task per node on nodes of several GPUs: fairseq spawns one process per GPU itself."""
    import torch

    return (launch.launcher == "srun" and not cpu and torch.cuda.device_count() > 1
            and env.get("SLURM_STEP_NUM_NODES") == str(launch.world_size))


def prepare(cfg) -> int:
    """Fill in the distributed config from the launcher, or for a spawn; the number of processes this
    process must spawn (0: none, it is a rank itself or the only process)."""
    import torch
    from fairseq.distributed import utils as distributed_utils

    dt = cfg.distributed_training
    if cfg.common.tpu:
        return 0
    cpu = cfg.common.cpu or not torch.cuda.is_available()
    if cpu and dt.distributed_backend == "nccl":
        dt.distributed_backend = "gloo"
    if dt.distributed_init_method is None and not dt.pipeline_model_parallel:
        launch = detect_launch()
        if launch is not None and not _one_task_per_node_spawning_gpus(launch, cpu):
            apply_launch(cfg, launch)
            return 0
        if launch is not None and dt.distributed_port <= 0:  # srun, one task per node: fairseq's rules need a port
            dt.distributed_port = slurm_port(os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID"))
        if cpu and dt.distributed_world_size > 1:  # fairseq would count CUDA devices, and spawn none
            port = dt.distributed_port if dt.distributed_port > 0 else free_port()
            dt.distributed_init_method = f"tcp://localhost:{port}"
            logger.info("spawning %d processes on CPU (gloo), rendezvous localhost:%d", dt.distributed_world_size, port)
            return dt.distributed_world_size
        distributed_utils.infer_init_method(dt)  # CUDA: fairseq's own rules
    if dt.distributed_init_method is None or dt.distributed_no_spawn:
        return 0
    if dt.pipeline_model_parallel:
        return 0  # fairseq's own spawn of one process per pipeline
    return dt.distributed_world_size if cpu else min(torch.cuda.device_count(), dt.distributed_world_size)


def _distributed_data_parallel(module, *args, device_ids=None, output_device=None, **kwargs):
    """``DistributedDataParallel`` as fairseq builds it, with two changes: no ``device_ids`` or
    ``output_device`` for a CPU module (DDP refuses them), and fairseq's ``broadcast_buffers`` passed
    as ``forward_sync_buffers`` where torch has deprecated the former (torch >= 2.13); buffers are then
    also synced once at start, which changes nothing for identically initialised ranks."""
    from torch.nn.parallel import DistributedDataParallel

    if next(module.parameters()).device.type == "cpu":
        device_ids = output_device = None
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    if "broadcast_buffers" in kwargs and renamed:
        kwargs["forward_sync_buffers"] = kwargs.pop("broadcast_buffers")
    return DistributedDataParallel(module, *args, device_ids=device_ids, output_device=output_device, **kwargs)


def torch_with_safe_broadcast_load(_torch):
    """The ``torch`` of ``fairseq.distributed.utils``, whose one ``torch.load`` is in ``_broadcast_object_slow``
    (rank 0 sends the checkpoint it read to the other ranks on resume): that load goes through the
    allow-list, plus fairseq's own placeholder for the tensors it sends apart."""
    from fairseq.distributed import utils as distributed_utils

    from fairseq_ext.runtime.checkpoint_loading import TorchWithLoad
    from fairseq_ext.serialization import safe_torch_load

    return TorchWithLoad(functools.partial(safe_torch_load, extra_globals=[distributed_utils._TensorPlaceholder]))


def launching_call_main(original):
    """fairseq's ``call_main`` that first unties ``--bf16`` from ``--tpu`` (:mod:`fairseq_ext.runtime.precision`),
    then sets the distributed config from the launcher or spawns the ranks itself (see the module's doc)."""

    @functools.wraps(original)
    def call_main(cfg, main, **kwargs):
        precision.untie_if_implied(cfg)  # first: everything below reads common.tpu
        nprocs = prepare(cfg)
        if nprocs:
            return spawn(cfg, main, kwargs, nprocs)
        result = original(cfg, main, **kwargs)  # this process is a rank (torchrun, srun) or the only process
        release_process_group()
        return result

    return call_main


def ddp_that_accepts_cpu_modules(_ddp):
    """The ``DistributedDataParallel`` fairseq's model wrapper builds."""
    return _distributed_data_parallel
