"""--compile-model: fairseq-train's model through torch.compile gives the same losses as without, and the
checkpoint it writes is a plain one (no ``_orig_mod.`` names, so it resumes with or without) that exports."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from fairseq_ext.serialization import safe_torch_load
from support.tiny import RUNS
from support.training import fairseq_train

pytestmark = pytest.mark.slow


def masked_lm(data, save, *extra):
    return fairseq_train(data, "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", *RUNS["hf_masked_lm"], "--cpu",
                         "--tokens-per-sample", "64", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024",
                         "--num-workers", "0", "--log-interval", "1", "--dropout", "0", "--attention-dropout", "0",
                         "--save-dir", save, "--no-epoch-checkpoints", "--seed", "1", "--disable-validation", *extra,
                         console_script=False)


def test_compiled_training_matches_and_saves_a_plain_checkpoint(text_data, tmp_path):
    plain = masked_lm(text_data, tmp_path / "plain", "--max-update", "3")
    compiled = masked_lm(text_data, tmp_path / "compiled", "--max-update", "3", "--compile-model")
    assert "the model runs through torch.compile (--compile-model)" in compiled.text
    assert len(compiled.train_losses) == 3
    assert compiled.train_losses == pytest.approx(plain.train_losses, rel=2e-3), (compiled.train_losses,
                                                                                  plain.train_losses)
    state = safe_torch_load(tmp_path / "compiled" / "checkpoint_last.pt", map_location="cpu")
    reference = safe_torch_load(tmp_path / "plain" / "checkpoint_last.pt", map_location="cpu")
    assert list(state["model"]) == list(reference["model"])
    proc = run_cli("export-hf", str(tmp_path / "compiled" / "checkpoint_last.pt"), "-o", str(tmp_path / "hf"))
    assert "parity: max |" in proc.stdout and torch.isfinite(torch.tensor(compiled.train_losses)).all()
