"""Multi-process training on CPU over gloo, launched by torchrun and by fairseq's own spawn (srun: see
tests/e2e/test_slurm.py): every task trains with 2 ranks and matches a single process with the same global
batch; several ranks resume, also from a torn checkpoint_last.pt; the launcher's variables win."""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import BIN, REPO, run_cli
from fairseq_ext.errors import UserError
from fairseq_ext.runtime import launch as distributed
from fairseq_ext.runtime.launch import Launch, apply_launch, detect_launch
from fairseq_ext.serialization import safe_torch_load
from support.code_data import make_code_dataset
from support.tiny import RUNS
from support.training import JSON_LOG, TrainLog, fairseq_train

# --- which launcher started this process -----------------------------------------------------------------


def test_torchrun_of_one_process_and_a_batch_script_are_not_distributed():
    one = {"MASTER_ADDR": "localhost", "MASTER_PORT": "29500", "WORLD_SIZE": "1", "RANK": "0"}
    assert detect_launch(one) is None
    # inside an sbatch script (no srun step) SLURM_NTASKS is the allocation, not a set of running ranks
    assert detect_launch({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) is None
    assert detect_launch({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}) is None


def test_a_malformed_launcher_variable_is_one_line():
    with pytest.raises(UserError, match=r"^environment variable WORLD_SIZE='two' is not an integer$"):
        detect_launch({"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "two", "RANK": "0"})


def config(**distributed_training):
    dt = dict(distributed_init_method=None, distributed_world_size=1, distributed_rank=0, distributed_port=-1,
              distributed_no_spawn=False, device_id=0, distributed_backend="nccl", tpu=False,
              pipeline_model_parallel=False)
    dt.update(distributed_training)
    return SimpleNamespace(common=SimpleNamespace(cpu=True, tpu=False),
                           distributed_training=SimpleNamespace(**dt))


def test_srun_rank_gets_world_rank_and_a_port_derived_from_the_job(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"  # `scontrol show hostnames node[03-04]`, as Slurm prints it
    fake.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames node[03-04]' ] && printf 'node03\\nnode04\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "argv", ["fairseq-train", "data", "--cpu"])
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[03-04]", "SLURM_STEP_NUM_TASKS": "4",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    cfgs = [config(), config()]
    for cfg in cfgs:  # two tasks of the same job derive the same rendezvous
        apply_launch(cfg, detect_launch(env), env)
    dt = cfgs[0].distributed_training
    assert (dt.distributed_world_size, dt.distributed_rank, dt.device_id, dt.distributed_no_spawn) == (4, 3, 0, True)
    assert re.fullmatch(r"tcp://node03:\d{5}", dt.distributed_init_method)
    assert cfgs[1].distributed_training.distributed_init_method == dt.distributed_init_method
    cfg = config(distributed_port=23456)
    apply_launch(cfg, detect_launch(env), env)
    assert cfg.distributed_training.distributed_init_method == "tcp://node03:23456"


def test_a_world_size_that_disagrees_with_the_launcher_is_overridden_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(sys, "argv", ["fairseq-train", "data", "--distributed-world-size", "3"])
    cfg = config()
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.runtime.launch"):
        apply_launch(cfg, Launch("torchrun", 2, 0, 0, "env://"))
    assert cfg.distributed_training.distributed_world_size == 2
    assert "--distributed-world-size 3: torchrun started 2 processes; training with 2" in caplog.text


def test_without_local_rank_the_local_device_follows_the_rank():
    env = {"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "4", "RANK": "3"}  # e.g. a hand-made launcher
    assert detect_launch(env).local_rank == 3


def test_cpu_uses_gloo_and_spawns_only_without_a_launcher(monkeypatch):
    for name in ("MASTER_ADDR", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    cfg = config(distributed_world_size=2)
    assert distributed.prepare(cfg) == 2
    assert cfg.distributed_training.distributed_backend == "gloo"
    assert re.fullmatch(r"tcp://localhost:\d+", cfg.distributed_training.distributed_init_method)
    cfg = config()
    assert distributed.prepare(cfg) == 0 and cfg.distributed_training.distributed_init_method is None  # one process


def _one_rank_group(rendezvous: Path) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1,
                                         timeout=datetime.timedelta(seconds=30))
    torch.distributed.barrier()


def test_a_rank_releases_its_process_group_when_training_returns(tmp_path, monkeypatch):
    """Left to the interpreter's exit, gloo's threads can abort a finished rank (`terminate called without an
    active exception`: Slurm then marks the job FAILED). A launched rank (torchrun, srun) and a spawned one
    destroy the group once fairseq's main has returned."""
    from fairseq.distributed import utils as distributed_utils

    from fairseq_ext.runtime.spawn import rank_main

    for name in ("MASTER_ADDR", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    call_main = distributed.launching_call_main(lambda cfg, main, **kw: main(cfg, **kw))
    seen = []
    call_main(config(), lambda cfg: (_one_rank_group(tmp_path / "a"), seen.append(torch.distributed.is_initialized())))
    assert seen == [True] and not torch.distributed.is_initialized()
    monkeypatch.setattr(distributed_utils, "distributed_main", lambda i, main, cfg, kwargs: main(cfg, **kwargs))
    rank_main(0, lambda cfg: (_one_rank_group(tmp_path / "b"), seen.append(torch.distributed.is_initialized())),
              config(), {})
    assert seen == [True, True] and not torch.distributed.is_initialized()


# --- end to end: 2 CPU ranks against 1 process with the same global batch --------------------------------

MAX_UPDATE = 4
COMMON = ["--cpu", "--tokens-per-sample", "64", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "512",
          "--num-workers", "0", "--log-interval", "1", "--no-epoch-checkpoints",
          "--seed", "1", "--dropout", "0"]  # no dropout: ranks draw other masks than one process does
NO_ATTENTION_DROPOUT = {"hf_masked_lm": ["--attention-dropout", "0"], "hf_denoising": ["--attention-dropout", "0"]}


@pytest.fixture(scope="module")
def data(text_data, tmp_path_factory, bpe_dir):  # noqa: F811  (the fixture imported above)
    code = tmp_path_factory.mktemp("dist-code") / "code"
    make_code_dataset(code, bpe_dir)
    return {"hf_masked_lm": text_data, "hf_denoising": text_data, "code_mlm": code}


def train(launcher: list[str], task: str, data_dir: Path, save_dir: Path, *flags: str,
          user_dir: str = "fairseq_ext") -> TrainLog:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")}
    return fairseq_train(data_dir, "--user-dir", user_dir, "--task", task, *RUNS[task], *COMMON,
                         *NO_ATTENTION_DROPOUT.get(task, []), "--save-dir", save_dir, *flags, launcher=launcher,
                         env=env, timeout=300)


TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]  # --standalone: a free port


def losses(log: TrainLog) -> list[tuple[str, str]]:
    """(loss, num_updates) of every update, as logged: equal strings are equal figures."""
    return [(r["loss"], r["num_updates"]) for r in log.of("train_inner")]


def weights(save_dir: Path) -> dict:
    return safe_torch_load(save_dir / "checkpoint_last.pt", map_location="cpu")


def assert_same_training(single: Path, ranks: Path, updates: int) -> None:
    a, b = weights(single), weights(ranks)
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == updates
    for name, value in a["model"].items():  # the same updates, up to the order of float sums
        torch.testing.assert_close(b["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """One process, --update-freq 2: the global batch of 2 ranks with --update-freq 1."""
    runs = {}
    for task in RUNS:
        save_dir = tmp_path_factory.mktemp(f"single-{task}")
        runs[task] = (save_dir, train([], task, data[task], save_dir, "--update-freq", "2",
                                      "--max-update", str(MAX_UPDATE)))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("task", list(RUNS))
def test_torchrun_two_cpu_ranks_match_one_process(task, data, single, tmp_path):
    log = train(TORCHRUN, task, data[task], tmp_path, "--max-update", str(MAX_UPDATE))
    assert "torchrun: 2 processes, CPU, rendezvous env://" in log.text
    assert "training on 2 devices" in log.text and "initialized host" in log.text and "as rank 1" in log.text
    assert log.text.count("done training") == 1  # one training of 2 ranks, not 2 trainings of one
    single_dir, single_log = single[task]
    assert losses(log) == losses(single_log) and len(losses(log)) == MAX_UPDATE
    assert_same_training(single_dir, tmp_path, MAX_UPDATE)


@pytest.mark.slow
def test_fairseq_spawn_on_cpu_with_the_installed_package(data, single, tmp_path):
    user_dir = run_cli("user-dir").stdout.strip()  # the installed package, not the checkout's relative path
    log = train([], "hf_masked_lm", data["hf_masked_lm"], tmp_path, "--distributed-world-size", "2",
                "--max-update", str(MAX_UPDATE), user_dir=user_dir)
    assert "spawning 2 processes on CPU (gloo)" in log.text and "training on 2 devices" in log.text
    assert losses(log) == losses(single["hf_masked_lm"][1])
    assert_same_training(single["hf_masked_lm"][0], tmp_path, MAX_UPDATE)

    # SIGTERM to the spawning process (all a `kill PID` reaches) stops both ranks after one update, saved
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    cmd = [str(BIN / "fairseq-train"), str(data["hf_masked_lm"]), "--user-dir", user_dir, "--task", "hf_masked_lm",
           *RUNS["hf_masked_lm"], *COMMON, "--save-dir", str(tmp_path), "--distributed-world-size", "2",
           "--max-update", "100000", *JSON_LOG]
    with open(tmp_path / "log.txt", "w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + 240
        while max(TrainLog.parse((tmp_path / "log.txt").read_text()).updates, default=0) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    log = (tmp_path / "log.txt").read_text()
    stopped = re.search(r"received SIGTERM: stopped after update (\d+), saved ", log)
    assert stopped, log[-3000:]
    assert weights(tmp_path)["optimizer_history"][-1]["num_updates"] == int(stopped.group(1)) > MAX_UPDATE


@pytest.mark.slow
def test_two_ranks_resume_also_from_a_torn_checkpoint_last(data, single, tmp_path):
    """Rank 0 reads the checkpoint and broadcasts it (fairseq's bare torch.load there is refused by torch 2.13
    unless it goes through the allow-list); with checkpoint_last.pt torn, every rank falls back alike."""
    task, resumed = "hf_masked_lm", tmp_path / "resumed"
    flags = ["--save-interval-updates", "2"]
    train(TORCHRUN, task, data[task], resumed, *flags, "--max-update", str(MAX_UPDATE))
    last = resumed / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # torn, as by a kill during a copy
    log = train(TORCHRUN, task, data[task], resumed, *flags, "--max-update", str(MAX_UPDATE + 2))
    assert re.search(rf"checkpoint_last\.pt: unreadable, .*; resuming from checkpoint_\d+_{MAX_UPDATE}\.pt", log.text)
    loaded = rf"[Ll]oaded checkpoint .*checkpoint_\d+_{MAX_UPDATE}\.pt \(epoch \d+ @ {MAX_UPDATE} updates\)"
    assert re.search(loaded, log.text), log.text[-3000:]

    straight = tmp_path / "straight"
    train([], task, data[task], straight, *flags, "--update-freq", "2", "--max-update", str(MAX_UPDATE + 2))
    assert_same_training(straight, resumed, MAX_UPDATE + 2)


@pytest.mark.slow
def test_a_user_error_in_a_spawned_rank_is_one_line(tmp_path):
    """fairseq's spawn hands a rank's exception to the parent as the rank's traceback; a user error stays one
    line naming what is wrong, as in one process."""
    empty = tmp_path / "not-data"
    empty.mkdir()
    proc = subprocess.run([str(BIN / "fairseq-train"), str(empty), "--user-dir", "fairseq_ext", "--task",
                           "hf_masked_lm", *RUNS["hf_masked_lm"], *COMMON, "--distributed-world-size", "2",
                           "--save-dir", str(tmp_path / "ckpt")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-train: error: ") and str(empty) in last, proc.stderr[-3000:]
