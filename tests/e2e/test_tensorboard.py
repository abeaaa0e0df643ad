"""--tensorboard-logdir writes event files: loss and accuracy for train and valid, read back as records."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, documents_text
from fairseq_ext.prep.binarize_dir import binarize_directory
from support.tensorboard import scalars

pytestmark = pytest.mark.slow


def test_training_writes_loss_and_accuracy_for_train_and_valid(tmp_path, bert_dir):
    (tmp_path / "t.txt").write_text(documents_text(200, seed=9), encoding="utf-8")
    binarize_directory(bert_dir, {"train": tmp_path / "t.txt", "valid": tmp_path / "t.txt"}, tmp_path / "bin",
                       max_line_tokens=30, progress=False)
    logdir = tmp_path / "tb"
    args = [str(tmp_path / "bin"), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", "--arch", "roberta_small",
            "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
            "--encoder-attention-heads", "2", "--tokens-per-sample", "32", "--criterion", "masked_lm_with_accuracy",
            "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "512", "--max-update", "6",
            "--validate-interval-updates", "3", "--cpu", "--num-workers", "0", "--log-format", "simple",
            "--log-interval", "2", "--no-save", "--seed", "1", "--tensorboard-logdir", str(logdir)]
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args], capture_output=True, text=True,
                          cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "tensorboard not found" not in log

    train, valid, inner = (scalars(logdir / tag) for tag in ("train", "valid", "train_inner"))
    for name, tags in (("train", train), ("valid", valid), ("train_inner", inner)):
        assert {"loss", "accuracy"} <= set(tags), (name, sorted(tags))
        assert all(0.0 <= v <= 1.0 for v in tags["accuracy"].values()), (name, tags["accuracy"])
        assert all(v > 0 for v in tags["loss"].values()), (name, tags["loss"])
    assert {3, 6} <= set(valid["loss"])  # --validate-interval-updates 3, and the end of training
    assert sorted(inner["loss"]) == [2, 4, 6]  # --log-interval 2
    assert max(train["loss"]) == 6
