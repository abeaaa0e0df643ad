"""code_mlm: registry key, Arrow and mmap formats alike, packed and per-file samples, identifier masking,
tokenizers without bos or mask, errors, and end-to-end fairseq-train runs."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from fairseq_ext.data.arrow_dataset import CodeDataError
from fairseq_ext.tasks.code_mlm import CodeMLMConfig, CodeMLMTask
from fairseq_ext.vocab.tokenizer import TokenizerError
from support.code_data import SPLITS, STDLIB, make_code_dataset
from support.tiny import T5
from support.training import fairseq_train


@pytest.fixture(scope="module")
def both(tmp_path_factory, bpe_dir):
    """A code dataset directory with both formats (Arrow and train/valid.bin/.idx), byte-level BPE."""
    out = tmp_path_factory.mktemp("code") / "both"
    ids = make_code_dataset(out, bpe_dir, fmt="both")
    return out, ids


@pytest.fixture(scope="module")
def t5_tokenizer(tmp_path_factory):
    """A T5-layout SentencePiece model trained on stdlib code: <pad>=0 </s>=1 <unk>=2, no bos, no <mask>."""
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("t5spm")
    text = "\n".join(f.read_text(encoding="utf-8") for _p, files in SPLITS["train"] for f in files)
    (out / "code.txt").write_text(text, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(out / "code.txt"), model_prefix=str(out / "t5"), vocab_size=300, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, user_defined_symbols=["<extra_id_0>", "<extra_id_1>"],
        minloglevel=2)
    return out / "t5.model"


@pytest.fixture(scope="module")
def t5_data(tmp_path_factory, t5_tokenizer):
    out = tmp_path_factory.mktemp("code") / "t5"
    make_code_dataset(out, t5_tokenizer)
    return out


def make_task(data, split="train", **kw):
    kw = {"tokens_per_sample": 64, "seed": 3, "dataset_impl": None, **kw}
    task = CodeMLMTask.setup_task(CodeMLMConfig(data=str(data), **kw))
    task.load_dataset(split)
    return task


def samples(task, split="train"):
    ds = task.datasets[split]
    return [(ds[i]["source"].tolist(), ds[i]["target"].tolist()) for i in range(len(ds))]


@pytest.mark.parametrize("mode", ["none", "file_truncate", "file_split"])
def test_arrow_and_mmap_give_the_same_samples(both, mode):
    data, _ids = both
    arrow = make_task(data, sample_break_mode=mode, data_format="arrow", mask_unit="identifier")
    mmap = make_task(data, sample_break_mode=mode, data_format="mmap", mask_unit="identifier")
    assert samples(arrow) == samples(mmap)


def test_auto_format_is_arrow_when_dataset_dict_json_is_there(both, tmp_path, bpe_dir, caplog):
    make_code_dataset(tmp_path / "mmap_only", bpe_dir, fmt="mmap")
    with caplog.at_level(logging.INFO, logger="fairseq_ext.tasks.code_mlm"):
        from_arrow = make_task(both[0], data_format="auto")
        from_mmap = make_task(tmp_path / "mmap_only", data_format="auto")
    assert "(train, Arrow)" in caplog.text and "mmap_only/train.bin" in caplog.text
    assert samples(from_arrow) == samples(from_mmap)


def test_packed_blocks_hold_every_file_in_order(both):
    data, ids = both
    ds = make_task(data).datasets["train"]
    d = ds.dictionary
    blocks = [ds.blocks[i].tolist() for i in range(len(ds))]
    assert all(b[0] == d.bos() and len(b) <= 64 for b in blocks)
    assert [len(b) for b in blocks[:-1]] == [64] * (len(blocks) - 1)
    assert [t for b in blocks for t in b[1:]] == [t for row in ids["train"] for t in row + [d.eos()]]


def test_one_file_per_sample_cut_or_split(both, caplog):
    data, ids = both
    lengths = np.array([len(r) + 1 for r in ids["train"]])  # with eos
    with caplog.at_level(logging.INFO, logger="fairseq_ext.tasks.code_mlm"):
        cut = make_task(data, sample_break_mode="file_truncate").datasets["train"]
    n_cut, dropped = int((lengths > 63).sum()), int(np.maximum(lengths - 63, 0).sum())
    assert n_cut > 0 and f"{n_cut} files longer than 63 tokens cut, {dropped} tokens dropped" in caplog.text
    assert len(cut) == len(ids["train"])
    assert [cut.blocks[i].tolist()[1:] for i in range(len(cut))] == \
        [(r + [2])[:63] for r in ids["train"]]
    split = make_task(data, sample_break_mode="file_split").datasets["train"]
    assert len(split) == int(np.ceil(lengths / 63).sum())
    assert [t for i in range(len(split)) for t in split.blocks[i].tolist()[1:]] == \
        [t for r in ids["train"] for t in r + [2]]


def test_identifier_masking_does_not_depend_on_worker_count(both):
    data, _ids = both
    ds = make_task(data, mask_unit="identifier", mask_prob=0.15).datasets["train"]
    direct = samples(make_task(data, mask_unit="identifier", mask_prob=0.15))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, sampler=range(len(ds)))
    assert [(s["source"].tolist(), s["target"].tolist()) for s in loader] == direct
    chosen = sum(int((np.array(t) != ds.dictionary.pad()).sum()) for _s, t in direct)
    ordinary = sum(int((~ds.special[ds.blocks[i].numpy()]).sum()) for i in range(len(ds)))
    assert chosen / ordinary == pytest.approx(0.15, abs=0.02)


def test_token_budget_batches(both):
    task = make_task(both[0], sample_break_mode="file_split")
    ds = task.datasets["train"]
    itr = task.get_batch_iterator(ds, max_tokens=256, max_positions=64, required_batch_size_multiple=1)
    batches = itr.frozen_batches
    assert sorted(int(i) for b in batches for i in b) == list(range(len(ds)))
    assert all(len(b) * ds.sizes[b].max() <= 256 for b in batches)


def test_missing_split_is_one_line_naming_the_directory(both, tmp_path):
    data, _ids = both
    with pytest.raises(CodeDataError, match=rf"^{data}: no 'test' split \(it has: train, valid\)$"):
        make_task(data, split="test")
    with pytest.raises(CodeDataError, match=rf"^{data}: no test.bin/.idx"):
        make_task(data, split="test", data_format="mmap")


def test_t5_layout_without_bos_uses_extra_id_or_mask_token(t5_data):
    task = make_task(t5_data, mask_unit="identifier", sample_break_mode="file_truncate")
    d = task.dictionary
    assert (d.bos_index, d.pad(), d.eos()) == (None, 0, 1)
    assert d[d.mask_index] == "<extra_id_0>"
    ds = task.datasets["train"]
    first = ds.blocks[0].tolist()
    assert len(first) == 64 and first[0] != d.eos()  # no bos: the file's own first token; cut at 64
    masked = [s for s, _t in samples(task)]
    assert any(d.mask_index in s for s in masked)
    assert not np.isin(ds.random_pool, [d.mask_index]).any()  # the mask is never a random replacement
    other = make_task(t5_data, mask_token="<extra_id_1>")
    assert other.dictionary[other.dictionary.mask_index] == "<extra_id_1>"
    with pytest.raises(TokenizerError, match=r"tokenizer.json: no token 'nope' in the vocabulary \(--mask-token\)"):
        make_task(t5_data, mask_token="nope")


def test_a_tokenizer_without_mask_or_extra_id_needs_mask_token(tmp_path, spm_model):
    import sentencepiece as spm

    text = (STDLIB / "textwrap.py").read_text(encoding="utf-8")
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "t.txt"), model_prefix=str(tmp_path / "plain"),
                                   vocab_size=200, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    make_code_dataset(tmp_path / "d", tmp_path / "plain.model", splits={"train": SPLITS["train"][1:]})
    with pytest.raises(TokenizerError, match=r"^\S+/d/tokenizer.json: tokenizer has no mask token and no "
                                             r"<extra_id_0>; name one of its tokens with --mask-token TOKEN$"):
        make_task(tmp_path / "d")


ROBERTA = ["--arch", "roberta_small", "--encoder-layers", "1", "--encoder-embed-dim", "32",
           "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2"]


def train(data, tmp_path, *flags, arch=ROBERTA) -> str:
    run = fairseq_train(data, "--user-dir", "fairseq_ext", "--task", "code_mlm", *arch, "--tokens-per-sample", "64",
                        "--criterion", "masked_lm_with_accuracy",
                        "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024", "--max-update", "30", "--cpu",
                        "--log-interval", "10", "--save-dir", tmp_path / "ckpt",
                        "--no-epoch-checkpoints", "--seed", "1", *flags, console_script=False)
    losses = run.train_losses
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    assert run.valid and "accuracy" in run.valid[-1]
    return run.text


@pytest.mark.slow
@pytest.mark.parametrize("fmt,flags", [
    ("arrow", ["--mask-unit", "identifier", "--sample-break-mode", "file_split", "--num-workers", "2"]),
    ("mmap", ["--mask-unit", "span", "--num-workers", "0"]),
])
def test_trains_on_a_code_dataset(both, tmp_path, fmt, flags):
    log = train(both[0], tmp_path, "--data-format", fmt, *flags)
    assert ("(train, Arrow)" if fmt == "arrow" else "train.bin") in log


@pytest.mark.slow
def test_trains_with_a_t5_tokenizer_and_mask_token(t5_data, tmp_path):
    """The T5 encoder with T5's own tokenizer layout (no bos, no mask token) learns code MLM."""
    log = train(t5_data, tmp_path, "--mask-token", "<extra_id_1>", "--mask-unit", "identifier", "--num-workers", "0",
                arch=T5)
    assert "mask token: '<extra_id_1>'" in log and "T5EncoderFairseqModel" in log


@pytest.mark.slow
def test_fairseq_train_names_a_missing_split_in_one_line(both, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.train", str(both[0]), "--user-dir", "fairseq_ext",
                           "--task", "code_mlm", "--arch", "roberta_small", "--encoder-layers", "1",
                           "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads",
                           "2", "--tokens-per-sample", "64", "--criterion", "masked_lm_with_accuracy", "--optimizer",
                           "adam", "--lr", "1e-3", "--max-tokens", "1024", "--max-update", "1", "--cpu",
                           "--valid-subset", "test", "--save-dir", str(tmp_path / "ckpt")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        f"fairseq-train: error: {both[0]}: no 'test' split (it has: train, valid)"
