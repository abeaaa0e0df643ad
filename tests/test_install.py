"""A plain install in a fresh virtualenv, as the README offers it to users of their own environment:
``python -m venv``, ``pip install torch==<this torch>``, ``pip install -e REPO``, nothing else (no
scripts/setup_env.sh). fairseq pulls the newest torchaudio, which may not load beside that torch;
``import-hf``, ``export-hf`` and ``fairseq-train --user-dir fairseq_ext`` must work all the same.

About 3 minutes with pip's cache warm (fairseq's wheel is built once, ~5 minutes, then cached).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM

from conftest import REPO, make_text
from support.training import JSON_LOG, TrainLog

pytestmark = pytest.mark.slow

AUDIO_CHECK = "import fairseq_ext; from transformers import BartForConditionalGeneration, BertForMaskedLM"
AVAILABLE = ("import importlib.util; print(importlib.util.find_spec('torchaudio') is not None); import fairseq_ext; "
             "from transformers.utils import is_torchaudio_available; print(is_torchaudio_available())")


def randomised(model, seed: int):
    """Weights far from their init, so that a mapping mistake shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (p.dim() == 1) * 0.5)
    return model


def save_hf(model, tok_dir: Path, out: Path) -> Path:
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(out)
    return out


def plain_env() -> dict:
    """The user's shell: no PYTHONPATH pointing at a checkout, the virtualenv not activated."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONWARNINGS")}


def run(cmd: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=plain_env())
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain-install")
    started = time.perf_counter()
    run([sys.executable, "-m", "venv", root / "venv"], cwd=root)
    pip = [root / "venv" / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "install", "-q"]
    run([*pip, f"torch=={torch.__version__.split('+')[0]}"], cwd=root)
    run([*pip, "-e", REPO], cwd=root)
    print(f"plain install: {time.perf_counter() - started:.0f} s")
    return root / "venv" / "bin"


def test_the_plain_install_is_the_one_in_use(venv, tmp_path):
    proc = run([venv / "python", "-c", "import fairseq_ext, transformers; print(fairseq_ext.__file__)"],
               cwd=tmp_path)
    assert Path(proc.stdout.split()[-1]).resolve() == (REPO / "fairseq_ext" / "__init__.py").resolve()
    assert (venv / "fairseq-ext").exists() and (venv / "fairseq-train").exists()


def test_a_torchaudio_that_cannot_load_is_ignored_with_one_line(venv, tmp_path):
    """Whatever torchaudio pip chose: if it loads, nothing is said; if not, transformers still works."""
    broken = run([venv / "python", "-c", "import torchaudio"], cwd=tmp_path, check=False)
    proc = run([venv / "python", "-c", AUDIO_CHECK], cwd=tmp_path)
    said = [ln for ln in proc.stderr.splitlines() if "torchaudio" in ln]
    if broken.returncode == 0:
        assert said == []
    else:  # transformers imports torchaudio wherever its own check (find_spec) says it is there
        assert len(said) == 1 and "cannot be loaded beside torch" in said[0] and "ignoring it" in said[0]
        assert "Traceback" not in proc.stderr
        seen = run([venv / "python", "-c", AVAILABLE], cwd=tmp_path).stdout.split()
        assert seen == ["True", "False"]  # installed, and after `import fairseq_ext` absent to transformers


def test_import_export_round_trip_and_training_in_the_plain_install(venv, tmp_path, bert_dir, bpe_dir):
    fx = venv / "fairseq-ext"
    size = dict(encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(str(bpe_dir))), d_model=32, encoder_layers=1,
        decoder_layers=1, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2, forced_eos_token_id=2, **size))
    bert = BertForMaskedLM(BertConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(str(bert_dir))), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, pad_token_id=0))
    models = {"bert": save_hf(randomised(bert, 1), bert_dir, tmp_path / "bert"),
              "bart": save_hf(randomised(bart, 3), bpe_dir, tmp_path / "bart")}
    for family, hf in models.items():
        imported = run([fx, "import-hf", hf, "-o", tmp_path / f"{family}-fs"], cwd=tmp_path)
        assert f"imported {family}" in imported.stdout and "Traceback" not in imported.stderr
        exported = run([fx, "export-hf", tmp_path / f"{family}-fs" / "checkpoint.pt", "-o",
                        tmp_path / f"{family}-back"], cwd=tmp_path)
        assert "parity: max |logit difference|" in exported.stdout and "Traceback" not in exported.stderr
        before = load_file(hf / "model.safetensors")
        after = load_file(tmp_path / f"{family}-back" / "model.safetensors")
        assert sorted(before) == sorted(after)
        for key, value in before.items():  # import then export is bit-identical
            assert after[key].dtype == value.dtype and torch.equal(after[key], value), (family, key)

    # continued pretraining of the imported BERT with fairseq's own command and the plugin
    (tmp_path / "text.txt").write_text("\n".join(make_text(120, seed=2)) + "\n", encoding="utf-8")
    run([fx, "binarize", "--tokenizer", bert_dir, "--train", tmp_path / "text.txt", "--valid",
         tmp_path / "text.txt", "-o", tmp_path / "bin", "--quiet"], cwd=tmp_path)
    model_args = (tmp_path / "bert-fs" / "model_args.txt").read_text().split()
    train = run([venv / "fairseq-train", tmp_path / "bin", "--user-dir", REPO / "fairseq_ext", "--task",
                 "hf_masked_lm", *model_args, "--criterion", "masked_lm_with_accuracy", "--tokens-per-sample",
                 "32", "--max-tokens", "512", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "2",
                 "--restore-file", tmp_path / "bert-fs" / "checkpoint.pt", "--reset-optimizer",
                 "--reset-dataloader", "--reset-meters", "--save-dir", tmp_path / "ckpt", "--cpu",
                 "--num-workers", "0", *JSON_LOG, "--log-interval", "1"], cwd=tmp_path)
    log = TrainLog.parse(train.stdout + train.stderr)
    assert log.last_update == 2, log.text[-3000:]
    assert log.valid and all("accuracy" in r for r in log.valid)


def test_the_demo_runs_in_the_plain_install(venv, tmp_path):
    """The README's main job in a plain install. Its first steps import transformers (tokenizers) long
    before its last ones import BartForConditionalGeneration: a torchaudio judged only at that point
    would already have been taken as available by transformers, and the export would fail."""
    proc = run([venv / "fairseq-ext", "demo", "-o", tmp_path / "demo", "--corpus-mb", "0.2", "--vocab-size", "300",
                "--max-update", "2"], cwd=tmp_path)
    assert "[7/7] transformers infills" in proc.stdout and "demo finished" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "demo" / "hf-model" / "model.safetensors").is_file()
