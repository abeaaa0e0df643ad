"""fairseq-train with --user-dir fairseq_ext on binarized data: train, resume, refuse.

Each run is a real `fairseq-train` process on a tiny BART, as a user would start it.
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import REPO, documents_text, run_cli
from support.payload import Payload
from support.training import TrainLog, checkpoint_updates, fairseq_train

pytestmark = pytest.mark.slow

TINY_BART = [
    "--task", "denoising", "--arch", "bart_base", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--tokens-per-sample", "64", "--max-tokens", "512", "--mask", "0.3", "--mask-length", "subword",
    "--permute-sentences", "1", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed",
    "--cpu", "--num-workers", "0", "--log-interval", "1",
    "--no-epoch-checkpoints", "--seed", "3", "--disable-validation",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, bpe_dir):
    root = tmp_path_factory.mktemp("e2e")
    (root / "train.txt").write_text(documents_text(400, seed=5), encoding="utf-8")
    run_cli("binarize", "--tokenizer", str(bpe_dir), "--train", str(root / "train.txt"),
            "--valid", str(root / "train.txt"), "-o", str(root / "bin"), "--quiet")
    return root / "bin"


def train(*args, cwd, check: bool = True) -> TrainLog:
    return fairseq_train(*args, cwd=cwd, check=check, console_script=False, env=dict(os.environ, PYTHONPATH=""))


def test_train_then_resume_from_checkpoint_last(data_dir, tmp_path):
    save = tmp_path / "ckpt"
    train(data_dir, "--user-dir", "fairseq_ext", *TINY_BART, "--max-update", "4", "--save-dir", save, cwd=REPO)
    assert checkpoint_updates(save / "checkpoint_last.pt") == 4

    # Same command, higher --max-update, run from elsewhere with the installed package's path.
    user_dir = run_cli("user-dir").stdout.strip().splitlines()[-1]
    second = train(data_dir, "--user-dir", user_dir, *TINY_BART, "--max-update", "8", "--save-dir", save,
                   cwd=tmp_path)
    assert "Loaded checkpoint" in second.text and "@ 4 updates" in second.text, second.text[-3000:]
    assert second.updates[0] == 5
    assert checkpoint_updates(save / "checkpoint_last.pt") == 8


def test_fairseq_train_refuses_a_checkpoint_carrying_code(data_dir, tmp_path):
    save = tmp_path / "ckpt"
    save.mkdir()
    target = tmp_path / "pwned"
    torch.save({"model": {}, "extra_state": {"x": Payload(str(target))}}, save / "checkpoint_last.pt")
    log = train(data_dir, "--user-dir", "fairseq_ext", *TINY_BART, "--max-update", "2", "--save-dir", save,
                cwd=REPO, check=False)
    assert log.returncode != 0
    last = [ln for ln in log.text.splitlines() if ln.strip()][-1]
    assert "checkpoint_last.pt: refused to load checkpoint: it references posix.mkdir" in last
    assert not target.exists()
