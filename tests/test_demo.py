"""The README's main job, `fairseq-ext demo`, end to end (shrunk: few updates, less text)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from conftest import run_cli
from fairseq_ext.checkpoints import safe_torch_load
from fairseq_ext.vocab import TokenizerDictionary

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_recipe(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "-o", str(out), "--corpus-mb", "0.4", "--vocab-size", "2000", "--max-update", "6")
    for n in range(1, 6):
        assert f"[{n}/5]" in proc.stdout
    assert "validation loss" in proc.stdout and "demo finished" in proc.stdout
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    d = TokenizerDictionary.load(out / "data-bin" / "dict.txt")
    assert len(tok) == d.tokenizer_size == 2000
    with open(out / "checkpoints" / "checkpoint_last.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert state["optimizer_history"][-1]["num_updates"] == 6
    # the embedding rows are the tokenizer's ids (fairseq's plain loader adds nothing for this layout)
    assert state["model"]["encoder.embed_tokens.weight"].shape[0] == len(tok)
    assert "--max-update 6" in (out / "train.sh").read_text()


def test_demo_refuses_to_clobber_a_directory(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")
    proc = run_cli("demo", "-o", str(tmp_path / "demo"), check=False)
    assert proc.returncode == 1 and "not empty" in proc.stderr
    assert (tmp_path / "demo" / "mine.txt").read_text() == "keep me"
