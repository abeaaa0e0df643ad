"""Processes with a deadline, for benchmarks/gpu_check.py: nothing it starts outlives its time.

A :class:`Budget` is the time left until a deadline; :func:`run_process` runs a command in a session of its own,
its output to a log file, and kills the whole session (the command and anything it started: data loader workers,
torch's compile workers) when its timeout passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class Budget:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, seconds: float, start: float | None = None):
        self.deadline = (time.monotonic() if start is None else start) + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def timeout(self, cap: float) -> float:
        """A process's timeout: ``cap``, or less when the deadline comes first."""
        return min(cap, self.left())

    def share(self, fraction: float) -> Budget:
        """A budget ending after ``fraction`` of the time left here."""
        return Budget(self.left() * fraction)


@dataclass
class Proc:
    cmd: list[str]
    returncode: int | None  # None: killed at its timeout
    seconds: float
    text: str  # stdout and stderr together
    timeout: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def failure(self, tail: int = 1500) -> str:
        """One line of why, then the end of the output."""
        if self.timed_out and not self.seconds:
            return f"not started: no time left before the stage's deadline ({Path(self.cmd[0]).name})"
        if self.timed_out:
            head = f"timed out after {self.timeout:.0f} s"
        else:
            head = f"exit status {self.returncode}"
        return f"{head}: {Path(self.cmd[0]).name} {' '.join(self.cmd[1:3])} ...\n{self.text[-tail:]}"


def run_process(cmd: list[str], timeout: float, log: Path, env: dict | None = None) -> Proc:
    """Run ``cmd`` with its output in ``log``; kill its whole process group after ``timeout`` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if timeout <= 0:
        return Proc(cmd, None, 0.0, "not started: no time left", 0.0)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _kill_group(proc.pid)
            proc.wait()
    return Proc(cmd, returncode, time.perf_counter() - start, log.read_text(errors="replace"), timeout)


def _kill_group(pid: int) -> None:
    """Kill what is left of the session ``pid`` leads (the command exited: its orphaned children, if any)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary beside it, fsynced, renamed)."""
    from fairseq_ext.io_utils import write_file_atomically

    write_file_atomically(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode("utf-8")))
