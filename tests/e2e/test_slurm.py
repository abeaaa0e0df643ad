"""The Slurm batch files on a real Slurm (slurmctld + slurmd on localhost, tests/support/slurm_cluster.py).

Each of scripts/slurm/*.sbatch, unchanged, is submitted with ``sbatch`` as a tiny CPU job of two
tasks (``srun``, gloo): only variables and sbatch command-line options differ from a GPU run. Then
the warning signal Slurm sends before a time limit (``--signal=USR1@180`` signals every task of the
job's steps, not the batch shell: ``scancel --signal=USR1 JOB`` does the same) must make the job
save, requeue itself (rank 0 runs ``scontrol requeue``), resume and finish at ``--max-update``; and
the files' own ``#SBATCH --signal=USR1@180`` and ``--requeue`` must do it before a time limit (the test
cluster requeues only jobs that ask, ``JobRequeue=0``). And ``binarize_array.sbatch``, a 3-task array job of
one CPU each, must write the shards that one ``binarize --shards 3`` writes (the same documents), which
fairseq-train then reads.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, REPO, binarized_documents, documents_text
from support.binarized import documents
from support.tiny import RUNS
from support.training import JSON_LOG, TrainLog, checkpoint_updates, fairseq_train

NTASKS = 2
# One node without GPUs: two tasks of one CPU each; --gpus-per-node=0 drops the batch files' GPU request.
CPU_JOB = ["--nodes=1", f"--ntasks-per-node={NTASKS}", "--cpus-per-task=1", "--gpus-per-node=0", "--time=10"]
COMMON = dict(PRECISION="--cpu", NUM_WORKERS="0", LOG_INTERVAL="1", WARMUP="2", REPO=str(REPO),
              VENV=str(BIN.parent), PYTHONPATH=str(REPO))
JSON = " ".join(JSON_LOG)  # every job logs its figures as JSON records (read with TrainLog)
TINY_BART = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 "
             "--encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 "
             f"--decoder-attention-heads 2 --seed 3 {JSON}")
TINY_T5 = ("--encoder-layers 1 --encoder-embed-dim 32 --kv-dim 8 --encoder-ffn-embed-dim 64 "
           f"--encoder-attention-heads 4 --seed 3 {JSON}")
START = re.compile(r"^job (?P<job>\d+) started \S+ on \S+, restart (?P<restart>\d+), (?P<tasks>\d+) tasks$", re.M)
LOADED = re.compile(r"[Ll]oaded checkpoint \S+checkpoint_last\.pt \(epoch (\d+) @ (\d+) updates\)")


def positions(log: TrainLog) -> list[tuple[int, float]]:
    """(epoch, fairseq's ``update`` figure) of every logged update: epoch - 1 + (batch in epoch) / (batches in
    epoch), rounded to 3 decimals."""
    return [(int(r["epoch"]), float(r["update"])) for r in log.of("train_inner")]


def batch_step(*logs: TrainLog) -> float:
    """1 / (batches in an epoch): the step of ``update`` between consecutive batches of one epoch (the median
    over the runs' consecutive logged updates, as each figure is rounded)."""
    steps = sorted(b[1] - a[1] for log in logs for a, b in zip(positions(log), positions(log)[1:]) if a[0] == b[0])
    assert steps, "no two consecutive updates in one epoch were logged"
    return steps[len(steps) // 2]


def is_next_batch(position: tuple[int, float], then: tuple[int, float], step: float) -> bool:
    """Whether ``then`` is the batch after ``position`` (the first of the next epoch after an epoch's last), up to
    the rounding of the logged figures."""
    epoch, update = position
    expected = (epoch + 1, epoch + step) if update + step / 2 >= epoch else (epoch, update + step)
    return then[0] == expected[0] and abs(then[1] - expected[1]) <= 0.0015


class Job:
    """A batch file submitted to the test cluster; ``log`` is its output file (every run appends)."""

    def __init__(self, slurm, script: str, work: Path, env: dict[str, str], options: tuple[str, ...] = ()):
        self.slurm = slurm
        self.pending_since = None  # when it was first seen waiting out a requeue delay
        work.mkdir(parents=True, exist_ok=True)
        self.out = work / "job.out"
        command = ["sbatch", "--parsable", *CPU_JOB, *options, f"--output={self.out}", f"scripts/slurm/{script}"]
        self.id = slurm.run(command, cwd=REPO, env=dict(COMMON, WORK=str(work), **env)).stdout.strip()

    @property
    def log(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def state(self) -> dict[str, str]:
        return self.slurm.job(self.id)

    def wait(self, until, timeout: float = 540, what: str = "") -> dict[str, str]:
        """Poll ``scontrol show job`` until ``until(state)``; a job that ends otherwise fails the test."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if until(state):
                return state
            if state["JobState"] in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY") or \
                    time.monotonic() > deadline:
                self.slurm.run(["scancel", self.id], check=False)  # the next test needs the node
                pytest.fail(f"job {self.id} ({what or 'waiting'}): {state['JobState']} {state.get('Reason')} "
                            f"ExitCode={state.get('ExitCode')}\n{self.log[-5000:]}")
            time.sleep(0.5)

    def completed(self, timeout: float = 540) -> dict[str, str]:
        state = self.wait(lambda s: s["JobState"] == "COMPLETED", timeout, "to complete")
        assert state["ExitCode"] == "0:0", self.log[-5000:]
        return state


REQUEUE_SETTLE_S = 5.0


def start_now_when_eligible(slurm, job: Job, state: dict[str, str]) -> None:
    """Start a requeued job that waits out Slurm's requeue delay (Reason=BeginTime) now, but only once it has
    pended for REQUEUE_SETTLE_S: the node revokes the job's credential when it requeues it, and a launch of the
    same job within that second is refused ("Job credential revoked") and fails the job."""
    if state["JobState"] != "PENDING" or state.get("Reason") != "BeginTime":
        return
    if job.pending_since is None:
        job.pending_since = time.monotonic()
    if time.monotonic() - job.pending_since >= REQUEUE_SETTLE_S:
        slurm.run(["scontrol", "update", f"JobId={job.id}", "StartTime=now"], check=False)  # again next poll


def check_two_ranks_trained(log: str, max_update: int) -> None:
    """Both tasks joined one gloo group of two, rank 0 logged every update up to ``max_update``."""
    assert "Traceback" not in log and "srun: error" not in log, log[-5000:]
    assert START.search(log)["tasks"] == str(NTASKS), log[:2000]
    for rank in range(NTASKS):
        assert re.search(rf"initialized host \S+ as rank {rank}\b", log), log[-5000:]
    assert f"srun: {NTASKS} processes, CPU" in log and f"training on {NTASKS} devices" in log, log[-5000:]
    run = TrainLog.parse(log)
    updates = run.updates
    assert updates and updates[-1] == max_update, updates
    losses = run.train_losses
    assert losses and all(0 < x < 30 for x in losses), losses


@pytest.fixture(scope="module")
def bart_data(tmp_path_factory, bpe_dir):
    return binarized_documents(tmp_path_factory.mktemp("slurm-bart"), bpe_dir, 400, seed=11)


def bart_env(data: Path, max_update: int) -> dict[str, str]:
    return dict(DATA=str(data), ARCH="bart_small", TOKENS_PER_SAMPLE="64", MAX_TOKENS="512", UPDATE_FREQ="1",
                MAX_UPDATE=str(max_update), LR="1e-3", SAVE_INTERVAL="1000", EXTRA_TRAIN_ARGS=TINY_BART)


@pytest.mark.slow
def test_pretrain_bart_runs_two_tasks(slurm, bart_data, tmp_path):
    job = Job(slurm, "pretrain_bart.sbatch", tmp_path / "work", bart_env(bart_data, 6))
    job.completed()
    check_two_ranks_trained(job.log, 6)
    assert checkpoint_updates(tmp_path / "work" / "checkpoints" / "checkpoint_last.pt") == 6


@pytest.mark.slow
def test_pretrain_code_runs_two_tasks_in_bf16(slurm, bpe_dir, tmp_path):
    from support.code_data import make_code_dataset

    make_code_dataset(tmp_path / "code-data", bpe_dir)
    env = dict(DATA=str(tmp_path / "code-data"), TOKENS_PER_SAMPLE="64", MAX_TOKENS="512", MAX_UPDATE="6",
               LR="1e-3", SAVE_INTERVAL="3", EXTRA_TRAIN_ARGS=TINY_T5, PRECISION="--cpu --bf16")
    job = Job(slurm, "pretrain_code.sbatch", tmp_path / "work", env)
    job.completed()
    check_two_ranks_trained(job.log, 6)
    assert "--bf16: training in torch.bfloat16 on cpu" in job.log and "xla" not in job.log.lower()
    assert "T5EncoderFairseqModel" in job.log
    valid = TrainLog.parse(job.log).valid  # validation every 3 updates
    assert valid and all("accuracy" in r for r in valid), job.log[-3000:]
    ckpt = tmp_path / "work" / "checkpoints"
    assert checkpoint_updates(ckpt / "checkpoint_last.pt") == 6 and (ckpt / "checkpoint_1_3.pt").exists()


@pytest.mark.slow
def test_continue_pretraining_imports_prepares_trains_and_exports(slurm, tmp_path):
    """The whole batch file: import-hf, prepare and binarize on the batch host, srun training, export-hf."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from support.tweets import bert_vocab, make_tweets

    hf = tmp_path / "tiny-bert"
    hf.mkdir()
    (hf / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(hf / "vocab.txt"), do_lower_case=True)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(hf)
    tok.save_pretrained(hf)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "tweets.txt").write_text("\n".join(make_tweets(300, seed=2)) + "\n", encoding="utf-8")
    env = dict(HF_MODEL=str(hf), RAW=str(tmp_path / "raw"), TOKENS_PER_SAMPLE="32", VALID_RATIO="0.1",
               BATCH_SIZE="8", UPDATE_FREQ="1", MAX_UPDATE="6", LR="1e-3", SAVE_INTERVAL="3",
               EXTRA_TRAIN_ARGS=f"--seed 3 {JSON}")
    job = Job(slurm, "continue_pretraining.sbatch", tmp_path / "work", env)
    job.completed(timeout=540)
    check_two_ranks_trained(job.log, 6)
    assert "imported bert as fairseq hf_bert" in job.log
    assert re.search(r"parity: max \|logit difference\| fairseq vs transformers = \S+", job.log), job.log[-3000:]
    assert checkpoint_updates(tmp_path / "work" / "checkpoints" / "checkpoint_last.pt") == 6
    assert (tmp_path / "work" / "hf-model" / "model.safetensors").exists()


@pytest.mark.slow
def test_pretrain_code_contrastive_stage_fine_tunes_an_init_hf_directory(slurm, bert_dir, tmp_path):
    """STAGE=contrastive INIT_HF=a sentence-transformers directory: the batch host imports it, makes the pairs
    with its tokenizer and measures it; two ranks train from the import; the finished job exports and measures."""
    import shutil
    import sysconfig

    from support.st_models import bert_st_dir

    init = bert_st_dir(tmp_path / "st-bert", bert_dir, pooling="mean", normalize=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for pkg in ("json", "html", "http"):
        shutil.copytree(stdlib / pkg, tmp_path / "src" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    env = dict(STAGE="contrastive", INIT_HF=str(init), SRC=str(tmp_path / "src"), LANGUAGES="python",
               VALID_RATIO="0.3", QUERY_TOKENS="32", KEY_TOKENS="48", MAX_TOKENS="640", MAX_UPDATE="4", LR="1e-3",
               SAVE_INTERVAL="2", EXTRA_TRAIN_ARGS=f"--seed 3 {JSON}")
    job = Job(slurm, "pretrain_code.sbatch", work, env)
    job.completed()
    check_two_ranks_trained(job.log, 4)
    assert f"loading pretrained model from {work / 'init' / 'checkpoint.pt'}" in job.log
    assert "max |embedding difference| sentence-transformers vs fairseq" in job.log  # imported on the batch host
    assert all("mrr" in r for r in TrainLog.parse(job.log).valid) and TrainLog.parse(job.log).valid
    assert checkpoint_updates(work / "contrastive" / "checkpoint_last.pt") == 4
    pairs = json.loads((work / "code-pairs" / "code_pairs.json").read_text())["splits"]["valid"]["pairs"]
    for measured in ("eval-zero-shot.json", "eval-retrieval.json"):
        assert json.loads((work / measured).read_text())["pool"]["pairs"] == pairs
    assert (work / "st-model" / "modules.json").exists() and f"pool MRR ({pairs} pairs): start" in job.log


@pytest.mark.slow
def test_warning_signal_saves_requeues_and_resumes(slurm, bart_data, tmp_path):
    max_update = 40
    job = Job(slurm, "pretrain_bart.sbatch", tmp_path / "work", bart_env(bart_data, max_update))
    job.wait(lambda s: len(TrainLog.parse(job.log).updates) >= 3, what="to train 3 updates")
    # What --signal=USR1@180 does at the time limit: SIGUSR1 to every task of the job's steps
    # (the srun-launched fairseq-train processes), not to the batch shell.
    slurm.run(["scancel", "--signal=USR1", job.id])
    requeued = f"`scontrol requeue {job.id}`: job requeued"  # logged by rank 0 once every rank has saved
    job.wait(lambda s: s.get("Restarts") == "1" and requeued in job.log, what="to save and requeue itself")

    def completed_without_delay(state: dict[str, str]) -> bool:
        """A requeued job may start only after Slurm's requeue delay (EligibleTime = requeue time + 121 s
        in Slurm 22.05): once it is pending for that reason, start it now instead of waiting."""
        start_now_when_eligible(slurm, job, state)
        return state["JobState"] == "COMPLETED"

    state = job.wait(completed_without_delay, timeout=540, what="to start again and complete")
    assert state["ExitCode"] == "0:0" and state["Restarts"] == "1" and state["Requeue"] == "1", job.log[-5000:]
    # Both runs in one file: the batch files append (--open-mode=append) rather than truncate on requeue.
    starts = list(START.finditer(job.log))
    assert [(m["job"], m["restart"], m["tasks"]) for m in starts] == [(job.id, "0", str(NTASKS)),
                                                                      (job.id, "1", str(NTASKS))], job.log[-5000:]
    first, second = job.log[:starts[1].start()], job.log[starts[1].start():]
    stop = re.search(r"received SIGUSR1: stopped after update (\d+), saved (\S+); exiting", first)
    assert stop and requeued in first, first[-5000:]
    stopped = int(stop.group(1))
    assert 3 <= stopped < max_update and stop.group(2).endswith("checkpoint_last.pt")
    before, after = TrainLog.parse(first), TrainLog.parse(second)
    assert before.updates[-1] == stopped  # it saved at the update it stopped after
    loaded = LOADED.search(second)
    assert loaded and int(loaded.group(2)) == stopped, second[-5000:]  # and the second run resumed from there
    assert after.updates[0] == stopped + 1
    # and at the next batch of the data, not at the start of the epoch (a stop after an epoch's last batch
    # resumes at the next epoch's first)
    assert is_next_batch(positions(before)[-1], positions(after)[0], batch_step(before, after)), \
        (positions(before)[-3:], positions(after)[:3])
    check_two_ranks_trained(second, max_update)
    assert checkpoint_updates(tmp_path / "work" / "checkpoints" / "checkpoint_last.pt") == max_update


@pytest.mark.slow
def test_the_files_own_directives_save_and_requeue_before_the_time_limit(slurm, bart_data, tmp_path):
    """No signal from the test: a 5-minute limit and the file's ``--signal=USR1@180`` make Slurm send
    SIGUSR1 to the tasks about a minute in; its ``--requeue`` lets rank 0 requeue the job (this cluster
    requeues no job that does not ask), and the next run resumes from the checkpoint."""
    job = Job(slurm, "pretrain_bart.sbatch", tmp_path / "work", bart_env(bart_data, 1_000_000), options=("--time=5",))
    requeued = f"`scontrol requeue {job.id}`: job requeued"
    job.wait(lambda s: s.get("Restarts") == "1" and requeued in job.log, timeout=300,
             what="to get SIGUSR1 from --signal=USR1@180, save and requeue itself")
    stop = re.search(r"received SIGUSR1: stopped after update (\d+), saved \S+checkpoint_last\.pt", job.log)
    assert stop, job.log[-5000:]

    def resumed(state: dict[str, str]) -> bool:
        start_now_when_eligible(slurm, job, state)
        starts = list(START.finditer(job.log))
        return len(starts) == 2 and bool(LOADED.search(job.log[starts[1].start():]))

    job.wait(resumed, timeout=300, what="to start again and resume")
    slurm.run(["scancel", job.id])  # SIGTERM: saves, never requeues; the job is over
    second = job.log[list(START.finditer(job.log))[1].start():]
    assert int(LOADED.search(second).group(2)) == int(stop.group(1)), second[-3000:]
    assert job.state()["Requeue"] == "1"


def array_completed(slurm, job_id: str, tasks: int, logs: Path, timeout: float = 300) -> None:
    """Poll ``scontrol show job`` until every task of the array job is COMPLETED with exit code 0."""
    deadline = time.monotonic() + timeout
    while True:
        lines = slurm.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()
        states = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in lines if line.strip()]
        done = {s["ArrayTaskId"]: s for s in states if s["JobState"] == "COMPLETED"}
        failed = [s for s in states if s["JobState"] in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                                         "OUT_OF_MEMORY")]
        if failed or time.monotonic() > deadline:
            slurm.run(["scancel", job_id], check=False)
            outputs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.out")))
            pytest.fail(f"array job {job_id}: {[(s['ArrayTaskId'], s['JobState']) for s in states]}\n{outputs}")
        if sorted(done) == [str(k) for k in range(tasks)]:
            assert all(s["ExitCode"] == "0:0" for s in done.values()), done
            return
        time.sleep(0.5)


@pytest.mark.slow
def test_binarize_array_writes_the_shards_of_one_run_and_training_reads_them(slurm, bpe_dir, tmp_path):
    from fairseq_ext.cli.main import main

    text = tmp_path / "train.txt"
    text.write_text(documents_text(480, seed=21), encoding="utf-8")
    out, logs = tmp_path / "data-bin", tmp_path / "logs"
    logs.mkdir()
    env = dict(TOKENIZER=str(bpe_dir), TRAIN=str(text), VALID=str(text), OUT=str(out), REPO=str(REPO),
               VENV=str(BIN.parent), PYTHONPATH=str(REPO))
    job_id = slurm.run(["sbatch", "--parsable", "--array=0-2", "--cpus-per-task=1", "--time=10",
                        f"--output={logs}/binarize-%a.out", "scripts/slurm/binarize_array.sbatch"],
                       cwd=REPO, env=env).stdout.strip()
    array_completed(slurm, job_id, 3, logs)
    dirs = [out / f"shard{k}" for k in range(3)]
    data = ":".join(map(str, dirs))
    for k in range(3):
        log = (logs / f"binarize-{k}.out").read_text()
        assert f"shard {k} of 3 (--shard-index {k}): documents dealt by a hash" in log, log
        assert log.rstrip().endswith(f"data path for fairseq-train: {data}"), log
    assert sorted(p.name for p in out.iterdir()) == [d.name for d in dirs]

    # the same documents, in total, as one `binarize --shards 3` run
    one = tmp_path / "one"
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(text), "--valid", str(text), "-o", str(one),
                 "--shards", "3", "--quiet"]) == 0
    array_docs = Counter(doc for d in dirs for doc in documents(d / "train"))
    assert array_docs == Counter(doc for k in range(3) for doc in documents(one / f"shard{k}" / "train"))
    assert documents(dirs[0] / "valid") == documents(one / "shard0" / "valid")

    # fairseq-train reads the array's shards, one an epoch, validation from shard0
    log = fairseq_train(data, "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", *RUNS["hf_masked_lm"],
                        "--tokens-per-sample", "64", "--max-tokens", "512", "--optimizer", "adam", "--lr", "1e-3",
                        "--cpu", "--num-workers", "0", "--log-interval", "1", "--max-epoch", "3", "--seed", "3",
                        "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", console_script=False)
    read = re.findall(r"epoch (\d+): training on shard (\d+) of 3: (\S+)", log.text)
    assert read[:3] == [(str(e), str(e - 1), str(dirs[e - 1])) for e in (1, 2, 3)], read
    assert log.updates and len(log.valid) == 3
    assert checkpoint_updates(tmp_path / "ckpt" / "checkpoint_last.pt") == log.updates[-1]


def test_without_root_or_apt_the_tests_skip_with_one_line(monkeypatch):
    from support import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "missing_commands", lambda: ["sbatch", "slurmctld"])
    monkeypatch.setattr(slurm_cluster.subprocess, "run", None)  # apt-get must not even be tried
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    assert slurm_cluster.ensure_installed() == ("a local Slurm for the tests needs root (slurmd runs as root; apt-get "
                                                "installs slurm-wlm and munge); missing: sbatch, slurmctld")
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: None)
    assert slurm_cluster.ensure_installed() == ("Slurm is not installed (sbatch, slurmctld missing) and there is no "
                                                "apt-get to install it")
