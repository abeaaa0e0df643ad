"""Crash-safe checkpoints: atomic writes and copies, fallback from a torn checkpoint_last.pt, kill -9 runs."""

from __future__ import annotations

import datetime
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from fairseq.trainer import Trainer

from conftest import REPO, binarized_documents
from fairseq_ext import runtime
from fairseq_ext.runtime import checkpoint_files
from fairseq_ext.runtime.checkpoint_files import (
    atomic_copy,
    atomic_torch_save,
    candidates,
    choose_checkpoint,
    remove_temporaries,
)
from fairseq_ext.runtime.patching import patched
from fairseq_ext.serialization import CheckpointRefusedError, safe_torch_load
from support.training import JSON_LOG, TrainLog, checkpoint_updates


def state(updates: int) -> dict:
    return {"model": {"w": torch.full((4,), float(updates))}, "optimizer_history": [{"num_updates": updates}],
            "extra_state": {"train_iterator": {"epoch": 1}}}


def save(path: Path, updates: int, mtime: float) -> Path:
    torch.save(state(updates), path)
    os.utime(path, (mtime, mtime))
    return path


GARBAGE = random.Random(0).randbytes(300)


def tear(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": GARBAGE,
                      "bad_pickle": b"\x80\x02" + GARBAGE}[how])


def test_install_patches_fairseq_once():
    runtime.install(training=False)
    runtime.install(training=False)
    assert patched(checkpoint_utils.torch_persistent_save) == "fairseq.checkpoint_utils:torch_persistent_save"
    assert patched(checkpoint_utils.PathManager) == "fairseq.checkpoint_utils:PathManager"
    assert checkpoint_utils.PathManager.__mro__[1:] == PathManager.__mro__  # wrapped once, not twice
    assert patched(Trainer.load_checkpoint) == "fairseq.trainer:Trainer.load_checkpoint"
    assert patched(Trainer.load_checkpoint.__wrapped__) is None  # one wrapper (resume choice and task check)
    # fairseq's library function is fairseq's: a resume at --max-update ends in the training loop instead
    assert patched(checkpoint_utils.load_checkpoint) is None and not hasattr(checkpoint_utils.load_checkpoint,
                                                                             "__wrapped__")


def test_atomic_save_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    atomic_torch_save(state(2), path)
    assert safe_torch_load(path, map_location="cpu")["optimizer_history"][0]["num_updates"] == 2

    class Interrupted(Exception):
        pass

    class Exploding:  # torch.save writes part of the file, then the process "dies"
        def __reduce__(self):
            raise Interrupted

    with pytest.raises(Interrupted):
        atomic_torch_save({"model": {"w": torch.zeros(10_000)}, "x": Exploding()}, path)
    assert safe_torch_load(path, map_location="cpu")["optimizer_history"][0]["num_updates"] == 2  # the old file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]  # no temporary left


def test_fairseq_save_and_copy_go_through_a_temporary(tmp_path, monkeypatch):
    """fairseq's own save path: torch_persistent_save then PathManager.copy, each renamed into place."""
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a).name, Path(b).name)),
                                                     real_replace(a, b))[1])
    first, last = tmp_path / "checkpoint_1_4.pt", tmp_path / "checkpoint_last.pt"
    checkpoint_utils.torch_persistent_save(state(4), str(first))
    assert checkpoint_utils.PathManager.copy(str(first), str(last), overwrite=True)
    assert [b for _a, b in replaced] == [first.name, last.name]
    assert all(a.startswith(f".{b}.") and a.endswith(".tmp") for a, b in replaced)
    assert last.read_bytes() == first.read_bytes()
    assert last.stat().st_mtime_ns == first.stat().st_mtime_ns  # a copy is as new as its source
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, last.name]
    assert atomic_copy(first, tmp_path / "checkpoint_best.pt") is True


def test_leftover_temporaries_are_removed_and_never_candidates(tmp_path):
    save(tmp_path / "checkpoint_last.pt", 4, 100)
    save(tmp_path / "checkpoint_1_4.pt", 4, 100)
    for name in (".checkpoint_last.pt.k2j3.tmp", "checkpoint_1_6.pt.tmp", "notes.tmp"):
        (tmp_path / name).write_bytes(b"half")
    assert [p.name for p in candidates(tmp_path)] == ["checkpoint_last.pt", "checkpoint_1_4.pt"]
    assert remove_temporaries(tmp_path) == [".checkpoint_last.pt.k2j3.tmp", "checkpoint_1_6.pt.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1_4.pt", "checkpoint_last.pt", "notes.tmp"]


def test_candidates_newest_first(tmp_path):
    for name, updates, mtime in (("checkpoint_1_2.pt", 2, 100), ("checkpoint_1_6.pt", 6, 300),
                                 ("checkpoint_1_4.pt", 4, 300), ("checkpoint1.pt", 5, 200),
                                 ("checkpoint_best.pt", 2, 100), ("checkpoint_last.pt", 6, 300)):
        save(tmp_path / name, updates, mtime)
    save(tmp_path / "checkpoint_last-shard1.pt", 6, 400)  # another suffix: not ours
    assert [p.name for p in candidates(tmp_path)] == ["checkpoint_last.pt", "checkpoint_1_6.pt", "checkpoint_1_4.pt",
                                                     "checkpoint1.pt", "checkpoint_1_2.pt", "checkpoint_best.pt"]


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "bad_pickle"])
def test_torn_last_falls_back_to_the_newest_interval_checkpoint(tmp_path, caplog, how):
    save(tmp_path / "checkpoint_1_2.pt", 2, 100)
    save(tmp_path / "checkpoint_1_4.pt", 4, 200)
    last = save(tmp_path / "checkpoint_last.pt", 6, 300)
    tear(last, how)
    os.utime(last, (300, 300))
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.runtime.checkpoint_files"):
        chosen = choose_checkpoint(last)
    assert Path(chosen).name == "checkpoint_1_4.pt"
    [line] = [r.getMessage() for r in caplog.records]  # one line: the file, why, where training resumes
    reason = {"truncated": "RuntimeError: PytorchStreamReader failed reading zip archive",
              "empty": "it is empty (0 bytes)", "garbage": "it is not a torch checkpoint",
              "bad_pickle": "its pickled data is corrupt"}[how]
    assert line.startswith(f"{last}: unreadable, {reason}") and "\n" not in line
    assert line.endswith("; resuming from checkpoint_1_4.pt (4 updates), copied to checkpoint_last.pt")
    assert checkpoint_updates(last) == 4  # repaired for whoever reads it next
    # fairseq's own read of the chosen file gets the state already read, once
    with open(chosen, "rb") as f:
        assert checkpoint_files.take_already_read(f)["optimizer_history"][0]["num_updates"] == 4
        assert checkpoint_files.take_already_read(f) is None


def test_readable_last_is_kept(tmp_path, caplog):
    save(tmp_path / "checkpoint_1_4.pt", 4, 300)
    last = save(tmp_path / "checkpoint_last.pt", 4, 200)
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.runtime.checkpoint_files"):
        assert choose_checkpoint(last) == str(last)
    assert not caplog.records
    checkpoint_files._ALREADY_READ.clear()


def test_all_torn_starts_fresh_with_a_warning(tmp_path, caplog):
    last = save(tmp_path / "checkpoint_last.pt", 6, 300)
    tear(last, "garbage")
    tear(save(tmp_path / "checkpoint_1_4.pt", 4, 200), "truncated")
    with caplog.at_level(logging.WARNING, logger="fairseq_ext.runtime.checkpoint_files"):
        assert choose_checkpoint(last) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{last}: unreadable, it is not a torch checkpoint (neither a zip archive nor a pickle); no readable "
        f"checkpoint in {tmp_path}; also unreadable: checkpoint_1_4.pt (RuntimeError: PytorchStreamReader "
        "failed reading zip archive: failed finding central directory); training starts fresh"]


def test_a_refused_checkpoint_is_not_skipped(tmp_path):
    """A checkpoint referencing a forbidden type is a security refusal, not damage: it stops the start."""
    save(tmp_path / "checkpoint_1_4.pt", 4, 100)
    last = tmp_path / "checkpoint_last.pt"
    torch.save({"model": {}, "x": datetime.date(2020, 1, 1)}, last)
    with pytest.raises(CheckpointRefusedError, match="datetime.date"):
        choose_checkpoint(last)


class StubTrainer(Trainer):
    """Just what checkpoint_utils.load_checkpoint (and the resume choice, its settings) asks of a trainer
    that starts fresh."""

    checkpoint_suffix, data_parallel_rank, data_parallel_world_size = "", 0, 1

    def __init__(self, cfg=None):
        self.cfg = types.SimpleNamespace(checkpoint=cfg)
        self.epochs = []

    def get_train_iterator(self, epoch, **kwargs):
        self.epochs.append(epoch)
        return type("Itr", (), {"epoch": epoch})()

    def lr_step(self, epoch, val_loss=None):
        pass


def test_fairseq_load_checkpoint_starts_fresh_when_nothing_reads(tmp_path, caplog):
    from fairseq.dataclass.configs import CheckpointConfig

    tear(save(tmp_path / "checkpoint_last.pt", 6, 300), "empty")
    (tmp_path / ".checkpoint_last.pt.a1b2.tmp").write_bytes(b"half")
    cfg = CheckpointConfig(save_dir=str(tmp_path))
    trainer = StubTrainer(cfg)
    with caplog.at_level(logging.INFO, logger="fairseq_ext.runtime.checkpoint_files"):
        extra_state, itr = checkpoint_utils.load_checkpoint(cfg, trainer)
    assert extra_state is None and itr.epoch == 1 and trainer.epochs == [1]
    assert not (tmp_path / ".checkpoint_last.pt.a1b2.tmp").exists()
    assert any("training starts fresh" in r.getMessage() for r in caplog.records)


def test_a_resume_at_max_update_trains_nothing(caplog):
    """fairseq_cli.train's epoch loop, resumed from a checkpoint at --max-update: the run ends before an update
    (fairseq would train one more and overwrite checkpoint_last.pt); otherwise fairseq's own ``train`` runs."""
    from fairseq.dataclass.configs import CheckpointConfig, OptimizationConfig

    calls = []
    train = checkpoint_files.stop_when_nothing_to_train(lambda *args: calls.append(args) or ([1.0], False))
    trainer = types.SimpleNamespace(get_num_updates=lambda: 14)
    for restore_file, max_update, expected in (("checkpoint_last.pt", 14, ([None], True)),
                                               ("checkpoint_last.pt", 15, ([1.0], False)),
                                               ("checkpoint_last.pt", 0, ([1.0], False)),  # 0: no limit
                                               ("other.pt", 14, ([1.0], False))):  # not a resume: fairseq's rules
        cfg = types.SimpleNamespace(checkpoint=CheckpointConfig(save_dir="ck", restore_file=restore_file),
                                    optimization=OptimizationConfig(max_update=max_update))
        with caplog.at_level(logging.INFO, logger="fairseq_ext.runtime.checkpoint_files"):
            assert train(cfg, trainer, None, None) == expected
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "ck: the checkpoint is at 14 updates, --max-update 14 is reached; nothing to train"]


# ---- the test: kill -9 a real fairseq-train at random moments, then run the same command again


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory, bert_dir):
    return binarized_documents(tmp_path_factory.mktemp("crash"), bert_dir, 120, seed=11)


MAX_UPDATE = 14


def train_command(data: Path, save_dir: Path) -> list[str]:
    return [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", "fairseq_ext",
            "--task", "hf_masked_lm", "--arch", "roberta_small", "--encoder-layers", "1",
            "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--tokens-per-sample", "64", "--criterion", "masked_lm_with_accuracy", "--optimizer", "adam",
            "--lr", "1e-3", "--max-tokens", "512", "--max-update", str(MAX_UPDATE), "--cpu", "--num-workers", "0",
            "--save-interval-updates", "2", "--keep-interval-updates", "3", *JSON_LOG,
            "--log-interval", "1", "--save-dir", str(save_dir), "--seed", "1"]


def temporaries(save_dir: Path) -> list[str]:
    return [n for n in os.listdir(save_dir) if n.endswith(".tmp")] if save_dir.is_dir() else []


def run_and_maybe_kill(cmd: list[str], log: Path, save_dir: Path, mode: str, arg: float) -> tuple[int, bool]:
    """Run ``cmd`` and kill -9 it: mode 'random', ``arg`` seconds after its first update; mode 'save', while
    it writes its ``arg``-th save of this run (as soon as a temporary checkpoint file exists after the log
    says "Saving checkpoint"); mode 'none': let it finish. The exit status, and whether it died mid-save."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if mode == "none":
        return proc.wait(), False
    trained_at = saving_at = None
    while proc.poll() is None:
        text = log.read_text()
        if trained_at is None and TrainLog.parse(text).updates:
            trained_at = time.monotonic()
        if mode == "random" and trained_at is not None and time.monotonic() - trained_at >= arg:
            break
        if mode == "save" and saving_at is None and text.count("Saving checkpoint") >= arg:
            saving_at = time.monotonic()
        if saving_at is not None and (temporaries(save_dir) or time.monotonic() - saving_at > 0.5):
            break
        time.sleep(0.001)
    during_save = bool(temporaries(save_dir))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(), during_save


@pytest.mark.slow
def test_kill_9_at_random_moments_always_ends_at_max_update(mlm_data, tmp_path):
    save_dir = tmp_path / "ckpt"
    save_dir.mkdir()
    # a previous run's debris: a torn checkpoint_last.pt, an empty interval checkpoint and a temporary
    (save_dir / "checkpoint_last.pt").write_bytes(GARBAGE)
    (save_dir / "checkpoint_1_2.pt").write_bytes(b"")
    (save_dir / ".checkpoint_last.pt.x8k2.tmp").write_bytes(b"half")
    cmd, rng = train_command(mlm_data, save_dir), random.Random(10)
    # killed at random moments and while saving; the kill during a run's second save guarantees a finished
    # save before the tear, so that run has a checkpoint to fall back to
    plan = [("random", rng.uniform(0, 0.3)), ("save", 1), ("random", rng.uniform(0, 0.3)), ("save", 2), ("tear", 0)]
    logs, kills_during_save, retries, rc = [], 0, 0, None
    while plan or not logs or rc != 0:  # the plan, then the same command again until it exits 0
        mode, arg = plan.pop(0) if plan else ("none", 0)
        if mode == "tear":  # what fairseq without the plugin leaves when killed in its copy
            tear(save_dir / "checkpoint_last.pt", "truncated")
            mode = "none"
        log = tmp_path / f"run{len(logs)}.log"
        rc, during_save = run_and_maybe_kill(cmd, log, save_dir, mode, arg)
        logs.append(log.read_text())
        assert rc in (0, -signal.SIGKILL), f"run {len(logs) - 1} ({mode}) failed with {rc}:\n{logs[-1][-3000:]}"
        logged = TrainLog.parse(logs[-1]).updates[-1:]
        print(f"run {len(logs) - 1}: {mode} {arg} -> rc {rc}, killed mid-save: {during_save}, {logged} updates")
        kills_during_save += rc == -signal.SIGKILL and during_save
        if mode == "save" and not during_save and retries < 3:  # the poll missed the write: once more
            plan.insert(0, (mode, arg))
            retries += 1
        assert len(logs) < 12, "never finished"
    assert checkpoint_updates(save_dir / "checkpoint_last.pt") == MAX_UPDATE
    assert not [p.name for p in save_dir.iterdir() if p.name.endswith(".tmp")]
    # the first run reported the debris, one line per file, and started fresh
    first = logs[0]
    assert (f"{save_dir / 'checkpoint_last.pt'}: unreadable, it is not a torch checkpoint (neither a zip archive "
            f"nor a pickle); no readable checkpoint in {save_dir}; also unreadable: checkpoint_1_2.pt (it is empty "
            "(0 bytes)); training starts fresh") in first
    assert "removed 1 temporary file(s) of an interrupted save" in first
    # the run after the torn checkpoint_last.pt resumed from an interval checkpoint
    assert re.search(rf"{re.escape(str(save_dir / 'checkpoint_last.pt'))}: unreadable, RuntimeError: .*; resuming "
                     r"from checkpoint(\d+|_\d+_\d+)\.pt \(\d+ updates\), copied to checkpoint_last.pt\n", logs[-1])
    assert kills_during_save >= 1, [log[-500:] for log in logs]
    # requeued once more after it finished: nothing to train, checkpoint_last.pt untouched
    before = (save_dir / "checkpoint_last.pt").read_bytes()
    rc, _ = run_and_maybe_kill(cmd, tmp_path / "again.log", save_dir, "none", 0)
    assert rc == 0 and (save_dir / "checkpoint_last.pt").read_bytes() == before
    assert f"the checkpoint is at {MAX_UPDATE} updates, --max-update {MAX_UPDATE} is reached; nothing to train" \
        in (tmp_path / "again.log").read_text()
