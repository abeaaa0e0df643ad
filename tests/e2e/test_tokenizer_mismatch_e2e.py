"""fairseq-train from an imported BERT on data of another tokenizer stops with one line naming both sides;
on its own tokenizer's data it trains, and checkpoints written before identities were recorded still load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from conftest import REPO, error_lines, make_text, run_cli
from fairseq_ext.convert.import_hf import import_hf
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.identity import recorded_tokenizer
from support.training import TrainLog, fairseq_train

FAIRSEQ_TRAIN = Path(sys.executable).parent / "fairseq-train"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bert_dir, bpe_dir):
    root = tmp_path_factory.mktemp("mismatch")
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    import_hf(root / "hf", root / "start")
    text = root / "text.txt"
    text.write_text("\n".join(make_text(200, seed=3)) + "\n", encoding="utf-8")
    for name, tok_dir in (("data-bert", root / "start"), ("data-bpe", bpe_dir)):
        binarize_directory(tok_dir, {"train": text, "valid": text}, root / name, progress=False)
    return root


def train(root: Path, data: str, start: Path, *how: str, save: str) -> TrainLog:
    flags = (root / "start" / "model_args.txt").read_text().split()
    return fairseq_train(root / data, "--user-dir", REPO / "fairseq_ext", "--task", "hf_masked_lm",
                         "--criterion", "masked_lm_with_accuracy", *flags, "--tokens-per-sample", "32", *how, start,
                         "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "8", "--max-update", "2", "--cpu",
                         "--num-workers", "0", "--save-dir", root / save, check=False)


def expected_line(root: Path, bpe_dir: Path) -> str:
    bert = TokenizerDictionary.from_path(root / "start").identity().describe()
    bpe = TokenizerDictionary.from_path(bpe_dir).identity().describe()
    return (f"fairseq-train: error: checkpoint {root / 'start' / 'checkpoint.pt'} was made with a tokenizer of "
            f"{bert}; {root / 'data-bpe' / 'tokenizer.json'} has {bpe}")


@pytest.mark.parametrize("how", [["--finetune-from-model"],
                                 ["--reset-optimizer", "--reset-dataloader", "--reset-meters", "--restore-file"]],
                         ids=["finetune-from-model", "restore-file"])
def test_other_tokenizers_data_stops_with_one_line_naming_both(setup, bpe_dir, how):
    log = train(setup, "data-bpe", setup / "start" / "checkpoint.pt", *how, save=f"ck-{how[-1][2:]}")
    assert log.returncode != 0
    # the last line is ours, and no traceback above it (fairseq's hydra deprecation notices are fairseq's)
    assert log.text.strip().splitlines()[-1] == expected_line(setup, bpe_dir), log.text[-3000:]
    assert "Traceback" not in log.text and "architectures match" not in log.text
    assert "[PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103" in log.text and "<s>=0 <pad>=1" in log.text
    assert not list((setup / f"ck-{how[-1][2:]}").glob("*.pt"))


def test_own_tokenizers_data_trains_and_records_the_tokenizer(setup, bpe_dir):
    log = train(setup, "data-bert", setup / "start" / "checkpoint.pt", "--reset-optimizer", "--reset-dataloader",
                "--reset-meters", "--restore-file", save="ck-ok")
    assert log.returncode == 0, log.text[-3000:]
    assert log.last_update == 2
    last = setup / "ck-ok" / "checkpoint_last.pt"
    with open(last, "rb") as f:
        state = safe_torch_load(f)
    assert recorded_tokenizer(state, last) == TokenizerDictionary.from_path(setup / "start").identity()
    proc = run_cli("export-hf", str(last), "-o", str(setup / "hf-wrong"), "--tokenizer", str(bpe_dir), check=False)
    bert = TokenizerDictionary.from_path(setup / "start").identity().describe()
    bpe = TokenizerDictionary.from_path(bpe_dir).identity().describe()
    assert proc.returncode == 1 and error_lines(proc.stderr) == [
        f"fairseq-ext export-hf: error: checkpoint {last} was made with a tokenizer of {bert}; {bpe_dir} has {bpe}"]
    assert not (setup / "hf-wrong").exists()


def test_checkpoint_without_a_recorded_tokenizer_still_loads(setup):
    with open(setup / "start" / "checkpoint.pt", "rb") as f:
        state = safe_torch_load(f)
    state["task_state"] = {}  # as import-hf wrote it before identities were recorded
    old = setup / "old.pt"
    torch.save(state, old)
    log = train(setup, "data-bert", old, "--finetune-from-model", save="ck-old")
    assert log.returncode == 0, log.text[-3000:]
    assert f"checkpoint {old} records no tokenizer" in log.text
