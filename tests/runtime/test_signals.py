"""SIGTERM / SIGUSR1 make fairseq-train save at the update boundary and exit 0; SIGUSR1 under Slurm requeues."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import REPO, binarized_documents
from fairseq_ext.runtime import signals

SIGNALS_PY = REPO / "fairseq_ext" / "runtime" / "signals.py"
LOAD_SIGNALS = (  # signals.py on its own, without importing fairseq (fast subprocesses)
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('signals_under_test', {str(SIGNALS_PY)!r})\n"
    "signals = importlib.util.module_from_spec(spec); spec.loader.exec_module(signals)\n"
)
UPDATE = re.compile(r"train_inner \| epoch (\d+):\s+(\d+) / (\d+) loss=([\d.]+).*?num_updates=(\d+)")


def fake_scontrol(tmp_path: Path, rc: int = 0) -> dict[str, str]:
    """An ``scontrol`` first on PATH that records its arguments and exits with ``rc``."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "scontrol.calls"}"\n'
                      f'[ {rc} -eq 0 ] || echo "slurm_requeue error: Invalid job id specified" >&2\nexit {rc}\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, bert_dir):
    return binarized_documents(tmp_path_factory.mktemp("signals"), bert_dir, 600, seed=8)


def train_command(data: Path, save_dir: Path, max_update: int, console_script: bool = False,
                  workers: int = 0) -> list[str]:
    entry = [str(Path(sys.executable).parent / "fairseq-train")] if console_script else \
        [sys.executable, "-m", "fairseq_cli.train"]
    return [*entry, str(data), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", "--arch", "roberta_small",
            "--encoder-layers", "1", "--encoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
            "--encoder-attention-heads", "2", "--tokens-per-sample", "64", "--criterion", "masked_lm_with_accuracy",
            "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "512", "--cpu", "--num-workers", str(workers),
            "--log-format", "simple", "--log-interval", "1", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--disable-validation", "--seed", "1", "--max-update", str(max_update)]


def run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **env), timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def run_and_signal(command: list[str], sig: int, env: dict[str, str], after_updates: int = 3,
                   group: bool = False) -> tuple[int, str]:
    """Start ``command``, send ``sig`` once the log shows ``after_updates`` updates, return (exit status, log).

    ``group``: to every process of its process group, data loader workers included, as Slurm and a
    terminal's Ctrl-C do.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(os.environ, **env), start_new_session=group)
    watchdog = threading.Timer(300, proc.kill)  # a run that ignores the signal trains 10**6 updates: stop it
    watchdog.start()
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            match = UPDATE.search(line)
            if not sent and match and int(match.group(5)) >= after_updates:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                sent = True
        return proc.wait(), "".join(lines)
    finally:
        watchdog.cancel()


def updates(log: str) -> list[tuple[int, int, int, str, int]]:
    """(epoch, batch in epoch, batches in epoch, loss, num_updates) of every train_inner line."""
    return [(int(e), int(i), int(n), loss, int(u)) for e, i, n, loss, u in UPDATE.findall(log)]


def saved_state(path: Path) -> tuple[int, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this test
    return state["optimizer_history"][-1]["num_updates"], state["extra_state"]["train_iterator"]


@pytest.mark.slow
def test_sigterm_saves_exits_0_and_resumes_at_that_update_and_batch(data, tmp_path):
    env = {**fake_scontrol(tmp_path), "SLURM_JOB_ID": "4242"}  # SIGTERM (scancel) must not requeue
    rc, log = run_and_signal(train_command(data, tmp_path / "ckpt", 10**6), signal.SIGTERM, env)
    assert rc == 0, log[-3000:]
    stop = re.search(r"fairseq_ext\.runtime\.signals \| received SIGTERM: stopped after update (\d+), saved (\S+); "
                     r"exiting", log)
    assert stop, log[-3000:]
    stopped = int(stop.group(1))
    assert stop.group(2) == str(tmp_path / "ckpt" / "checkpoint_last.pt")
    # with --log-interval 1 every update is logged before its boundary, so the last logged one is the saved one
    epoch, batch, batches, _loss, last = updates(log)[-1]
    assert stopped == last and 3 <= stopped < 10**6
    saved_updates, itr = saved_state(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert saved_updates == stopped and (itr["epoch"], itr["iterations_in_epoch"]) == (epoch, batch)
    assert not (tmp_path / "scontrol.calls").exists() and "requeue" not in log

    # the same command with --max-update K: resumes at that update and batch, ends at K
    target = stopped + 4
    rc, resumed = run(train_command(data, tmp_path / "ckpt", target), env)
    assert rc == 0, resumed[-3000:]
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch {epoch} @ {stopped} updates\)", resumed)
    steps = updates(resumed)
    assert [u for *_rest, u in steps] == list(range(stopped + 1, target + 1))
    if batch < batches:  # mid-epoch: the next batch of the same epoch (else the first of the next one)
        assert steps[0][:2] == (epoch, batch + 1)
    else:
        assert steps[0][:2] == (epoch + 1, 1)
    assert f"num_updates: {target} >= max_update: {target}" in resumed
    assert saved_state(tmp_path / "ckpt" / "checkpoint_last.pt")[0] == target

    # and trains exactly as a run that was never stopped (same batches, same masks, same optimizer state)
    rc, straight = run(train_command(data, tmp_path / "straight", target), {})
    assert rc == 0, straight[-3000:]
    assert updates(straight)[stopped:] == steps


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_and_requeues_the_job(data, tmp_path):
    env = {**fake_scontrol(tmp_path), "SLURM_JOB_ID": "4242"}
    # the fairseq-train script, with data loader workers, which get the signal too (Slurm signals every process)
    command = train_command(data, tmp_path / "ckpt", 10**6, console_script=True, workers=2)
    rc, log = run_and_signal(command, signal.SIGUSR1, env, group=True)
    assert rc == 0, log[-3000:]
    stop = re.search(r"received SIGUSR1: stopped after update (\d+), saved \S+checkpoint_last\.pt; exiting", log)
    assert stop, log[-3000:]
    assert int(stop.group(1)) == updates(log)[-1][-1] == saved_state(tmp_path / "ckpt" / "checkpoint_last.pt")[0]
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    assert "`scontrol requeue 4242`: job requeued" in log
    assert log.index("received SIGUSR1") < log.index("scontrol requeue")  # saved first, then requeued
    assert "Traceback" not in log and "DataLoader worker" not in log


def test_requeue_command_names_the_job_or_the_array_task():
    assert signals.requeue_command({"SLURM_JOB_ID": "42"}) == ["scontrol", "requeue", "42"]
    env = {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert signals.requeue_command(env) == ["scontrol", "requeue", "40_3"]
    assert signals.requeue_command({"SLURM_JOB_ID": ""}) is None and signals.requeue_command({}) is None


def test_a_failed_requeue_is_logged_not_raised(tmp_path, caplog):
    env = {**fake_scontrol(tmp_path, rc=1), "SLURM_JOB_ID": "7"}
    with caplog.at_level(logging.INFO, logger="fairseq_ext.runtime.signals"):
        assert signals.requeue(env) is False
    assert "`scontrol requeue 7` failed (slurm_requeue error: Invalid job id specified); the job is not " \
           "requeued" in caplog.text
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 7\n"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq_ext.runtime.signals"):
        assert signals.requeue({"SLURM_JOB_ID": "7", "PATH": str(tmp_path / "empty")}) is False  # no scontrol
    assert "`scontrol requeue 7` failed (FileNotFoundError" in caplog.text
    assert signals.requeue({"PATH": env["PATH"]}) is None  # outside Slurm: nothing to requeue
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 7\n"


def test_a_second_signal_acts_as_before_but_a_duplicate_does_not():
    """The first SIGTERM is only recorded; the same signal again at once (a group-wide kill reaching a
    rank directly and through its parent) changes nothing; a later one kills, as without the plugin."""
    code = LOAD_SIGNALS + (
        "import os, signal, time\n"
        "assert signals.install_handlers()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('recorded', signals.requested() == signal.SIGTERM, flush=True)\n"
        "time.sleep(signals.DUPLICATE_WINDOW_S + 0.5)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('survived the second signal', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stdout == "recorded True\n"


def test_signals_are_passed_on_to_spawned_ranks(tmp_path):
    """A parent that spawned ranks passes SIGTERM on; each rank acts on it once."""
    code = LOAD_SIGNALS + (
        "import os, signal, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *a: (print(\"rank got SIGTERM\", flush=True), sys.exit(0))); "
        "print(\"ready\", flush=True); time.sleep(60)'], stdout=subprocess.PIPE, text=True)\n"
        "assert child.stdout.readline() == 'ready\\n'\n"
        "assert signals.install_handlers()\n"
        "signals.forward_to([child.pid])\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print(child.stdout.read().strip(), child.wait(timeout=30), signals.requested() == signal.SIGTERM)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "rank got SIGTERM 0 True\n"


def test_installed_only_where_the_training_loop_runs():
    """A plain ``import fairseq_ext`` keeps the process's handlers; with fairseq's training loop loaded
    (what ``--user-dir`` does), register() wraps its validate_and_save and catches both signals."""
    code = (
        "import signal, sys\n"
        "import fairseq_ext\n"
        "from fairseq_ext.runtime import signals\n"
        "print(signal.getsignal(signal.SIGTERM) is signals._handle, 'fairseq_cli.train' in sys.modules)\n"
        "import fairseq_cli.train\n"
        "fairseq_ext.register()\n"
        "print(all(signal.getsignal(s) is signals._handle for s in (signal.SIGTERM, signal.SIGUSR1)),\n"
        "      fairseq_cli.train.validate_and_save.fairseq_ext_signals)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["False False", "True True"]


RANKS = LOAD_SIGNALS + """
import os, signal, types
import torch, torch.distributed as dist
import torch.multiprocessing as mp


def rank_main(rank, store):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    trainer = types.SimpleNamespace(device=torch.device("cpu"))
    first = signals.agreed_signal(trainer)  # no rank has a signal
    signals._requested = signal.SIGUSR1 if rank == 1 else 0  # only rank 1 got the warning
    second = signals.agreed_signal(trainer)
    with open(f"{store}.rank{rank}", "w") as out:  # one file per rank: prints would interleave
        out.write(f"{first} {second}")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(rank_main, args=(sys.argv[1],), nprocs=2)
"""


def test_every_rank_agrees_on_the_signal_of_any_rank(tmp_path):
    (tmp_path / "ranks.py").write_text(RANKS)
    proc = subprocess.run([sys.executable, str(tmp_path / "ranks.py"), str(tmp_path / "store")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rank in (0, 1):  # before any signal: go on; after rank 1's SIGUSR1: both ranks stop on it
        assert (tmp_path / f"store.rank{rank}").read_text() == f"0 {int(signal.SIGUSR1)}"
