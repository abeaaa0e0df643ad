"""Process groups of CPU workers (gloo) spawned by a test, and the batches they share out."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_rows(sizes: tuple[int, ...], rank: int, world: int) -> tuple[int, int]:
    """The rows of a batch of sum(sizes) that a worker takes: its share ``sizes[rank]``, or all of them alone."""
    if world == 1:
        return 0, sum(sizes)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def on_two_workers(work: Callable[[int, int], dict]) -> dict:
    """``work(rank, world)`` on two spawned workers in one gloo process group (spawning costs seconds: one
    group for all a test module needs); -> what worker 0 returned. ``work`` is a module-level function."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(work, free_port(), results), nprocs=2, join=True)
        return dict(results)


def _worker(rank: int, work: Callable[[int, int], dict], port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out = work(rank, 2)
        if rank == 0:
            results.update(out)
    finally:
        dist.destroy_process_group()
