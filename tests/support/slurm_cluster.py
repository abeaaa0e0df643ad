"""A real Slurm on localhost for the tests: munged, slurmctld and slurmd, one node, one partition.

:func:`ensure_installed` installs Debian's ``slurm-wlm`` and ``munge`` with apt when ``sbatch`` or
``slurmctld`` is missing (root only); :class:`SlurmCluster` writes a ``slurm.conf`` for this
machine (its real CPUs and memory, no cgroups, no systemd, no GPUs), starts the three daemons with
everything (state, spool, logs, the munge key and socket) in one directory, waits until ``sinfo``
shows the node idle, and stops them again. The directory is fixed (``STATE_DIR``) so that daemons
left behind by a killed test session are found by their pid files and stopped before new ones start.

    python tests/support/slurm_cluster.py   # bring it up by hand; prints the environment to use it
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
STATE_DIR = Path(tempfile.gettempdir()) / f"fairseq-ext-slurm-{os.getuid()}"
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
CTLD_PORT, SLURMD_PORT = 16817, 16818  # not Slurm's defaults, so that a real Slurm on the machine is left alone


def missing_commands() -> list[str]:
    return [c for c in ("sbatch", "srun", "scontrol", "sacct", "slurmctld", "slurmd", "munged")
            if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]


def ensure_installed() -> str | None:
    """Install slurm-wlm and munge when missing; None when Slurm can run here, else the one-line reason."""
    missing = missing_commands()
    if os.geteuid() != 0:
        return ("a local Slurm for the tests needs root (slurmd runs as root; apt-get installs slurm-wlm and munge)"
                + (f"; missing: {', '.join(missing)}" if missing else ""))
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing)} missing) and there is no apt-get to install it"
    print(f"installing {' '.join(PACKAGES)} with apt-get (once per machine) ...", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return f"`{' '.join(command)}` failed: {last[0]}"
    if missing_commands():
        return f"installed {' '.join(PACKAGES)} but {', '.join(missing_commands())} are still missing"
    print(f"installed {' '.join(PACKAGES)}", file=sys.stderr, flush=True)
    return None


def machine() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd itself counts them (``slurmd -C``)."""
    out = subprocess.run([sbin("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def alive(pid: int, name: str) -> bool:
    """Whether process ``pid`` runs and is ``name`` (a stale pid file may name someone else's process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()  # "PID (COMM) STATE ..."
    except OSError:
        return False
    comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[-1].split()[0]
    return comm == name and state not in "ZX"  # a zombie has exited


def sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """One-node Slurm on localhost, its configuration, state and logs in the directory ``root``;
    ``env`` is what a client command needs (``SLURM_CONF``)."""

    def __init__(self, root: Path = STATE_DIR):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "run" / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._lock = None

    # --- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        cpus, memory = machine()
        for sub in ("state", "spool", "log", "munge", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)  # munged insists: the key private, the socket reachable
        (self.root / "run").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():  # our own key: the cluster does not depend on /etc/munge
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        log = self.root / "log"
        self.conf.write_text("\n".join([
            "ClusterName=fairseqext",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups, no systemd in a container
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "JobRequeue=0",  # as on many clusters: only a job that asks (#SBATCH --requeue) is requeued
            "MinJobAge=600",  # finished jobs stay visible to scontrol show job for the checks
            "KillWait=10",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "MessageTimeout=10",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    # --- daemons -------------------------------------------------------------------------------
    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def running_pid(self, daemon: str) -> int | None:
        """The pid in ``daemon``'s pid file while that process runs, else None."""
        try:
            pid = int(self.pid_file(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid, daemon) else None

    def start(self, timeout: float = 60) -> None:
        """Stop what an earlier session left running from ``root``, then start afresh and wait for idle."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / "lock", "w")  # one test session at a time drives this cluster
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another test session to release the Slurm in {self.root} ...", file=sys.stderr,
                  flush=True)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.stop()
        for old in ("state", "log", "spool"):  # no jobs nor log lines left over from an earlier session
            shutil.rmtree(self.root / old, ignore_errors=True)
        self.write_config()
        log = self.root / "log"
        self._daemon("munged", [sbin("munged"), "--force", f"--socket={self.socket}",
                                f"--key-file={self.root / 'munge' / 'munge.key'}",
                                f"--pid-file={self.pid_file('munged')}", f"--log-file={log / 'munged.log'}",
                                f"--seed-file={self.root / 'munge' / 'munged.seed'}"])
        self._daemon("slurmctld", [sbin("slurmctld"), "-f", str(self.conf), "-c", "-i"])
        self._daemon("slurmd", [sbin("slurmd"), "-f", str(self.conf), "-N", "localhost"])
        self.wait_idle(timeout)

    def _daemon(self, name: str, command: list[str]) -> None:
        proc = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, **self.env))
        deadline = time.monotonic() + 20
        while self.running_pid(name) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {(proc.stdout + proc.stderr).strip()}\n{self.logs()}")
            time.sleep(0.2)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
            state = proc.stdout.strip()
            if state == "idle":
                return
            if state.startswith(("down", "drain")):
                self.run(["scontrol", "update", "NodeName=localhost", "State=RESUME"], check=False)
            time.sleep(0.5)
        raise RuntimeError(f"the node is not idle after {timeout:.0f} s (sinfo: {state!r})\n{self.logs()}")

    def stop(self) -> None:
        """Stop the daemons started from ``root`` (by their pid files), waiting until they are gone."""
        for name in DAEMONS:
            pid = self.running_pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid, name):
                os.kill(pid, signal.SIGKILL)

    def cancel_jobs(self, timeout: float = 30) -> None:
        """Cancel every job (a failed test may leave one running) and wait until none is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
            if not jobs:
                return
            self.run(["scancel", *jobs], check=False)
            time.sleep(0.5)

    def close(self) -> None:
        if self.running_pid("slurmctld") is not None:
            self.cancel_jobs()
        self.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- clients -------------------------------------------------------------------------------
    def run(self, command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        env = dict(os.environ, **self.env, **kwargs.pop("env", {}))
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, BatchFlag, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def logs(self, tail: int = 60) -> str:
        """The last lines of every daemon's log, for a failing test's report."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)


if __name__ == "__main__":
    reason = ensure_installed()
    if reason:
        sys.exit(reason)
    cluster = SlurmCluster()
    cluster.start()
    print(f"Slurm is up; stop it with kill $(cat {STATE_DIR}/*.pid)\nexport SLURM_CONF={cluster.conf}")
