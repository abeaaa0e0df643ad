"""hf_denoising: registry keys, datasets from binarized data, samples independent of worker count."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from conftest import make_text
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.tasks.hf_denoising import HFDenoisingConfig, HFDenoisingTask
from fairseq_ext.vocab.tokenizer import TokenizerError


def test_noise_settings_map_onto_noise_config_and_default_to_barts():
    """Every NoiseConfig field comes from one task setting (a changed flag reaches the noise); the task's
    defaults are NoiseConfig's (BART's, written once)."""
    from dataclasses import fields

    from fairseq_ext.data.noising import NoiseConfig
    from fairseq_ext.tasks.base import data_config
    from fairseq_ext.tasks.hf_denoising import NOISE_SETTINGS, noise_flags

    assert data_config(NoiseConfig, HFDenoisingConfig(), NOISE_SETTINGS) == NoiseConfig()
    changed = dict(mask=0.4, mask_random=0.2, insert=0.05, permute_sentences=0.5, rotate=0.25,
                   poisson_lambda=2.0, mask_length="word", replace_length=-1)
    noise = data_config(NoiseConfig, HFDenoisingConfig(**changed), NOISE_SETTINGS)
    assert noise == NoiseConfig(0.4, 0.2, 0.05, 0.25, 0.5, -1, "word", 2.0)
    assert len(changed) == len(fields(NoiseConfig))
    assert noise_flags() == ["--mask", "0.3", "--mask-random", "0.1", "--insert", "0", "--rotate", "0",
                             "--permute-sentences", "1", "--replace-length", "1", "--mask-length", "span-poisson",
                             "--poisson-lambda", "3.5"]


def test_bart_small_preset_and_user_overrides():
    from argparse import Namespace

    from fairseq_ext.models.bart import bart_small_architecture

    args = Namespace(encoder_layers=2)
    bart_small_architecture(args)
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.encoder_attention_heads,
            args.encoder_ffn_embed_dim) == (2, 6, 512, 8, 2048)
    assert args.share_all_embeddings and args.activation_fn == "gelu"  # the rest is bart_base


@pytest.fixture(scope="module")
def data(tmp_path_factory, bpe_dir):
    """Documents of 5 sentences (a blank line between them), binarized."""
    root = tmp_path_factory.mktemp("task")
    lines = make_text(300, seed=3)
    (root / "t.txt").write_text("\n".join(ln + ("\n" if i % 5 == 4 else "") for i, ln in enumerate(lines)) + "\n")
    binarize_directory(bpe_dir, {"train": root / "t.txt"}, root / "bin", max_line_tokens=62, progress=False)
    return root / "bin"


def make_task(data, **kw):
    cfg = HFDenoisingConfig(data=str(data), tokens_per_sample=64, seed=7, dataset_impl=None, **kw)
    t = HFDenoisingTask.setup_task(cfg)
    t.load_dataset("train")
    return t


@pytest.fixture(scope="module")
def task(data):
    return make_task(data)


def test_dictionary_from_the_data_directory(task):
    d = task.source_dictionary
    assert d.tokenizer_size == 400 and len(d) % 8 == 0 and d.mask_index == 4


def test_samples_do_not_depend_on_worker_count_or_order(task):
    ds = task.datasets["train"]
    direct = [ds[i]["source"].tolist() for i in range(len(ds))]
    backwards = [ds[i]["source"].tolist() for i in reversed(range(len(ds)))][::-1]
    assert direct == backwards
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, sampler=range(len(ds)))
    assert [s["source"].tolist() for s in loader] == direct
    ds.set_epoch(2)
    assert [ds[i]["source"].tolist() for i in range(len(ds))] != direct
    ds.set_epoch(1)


def test_samples_are_noised_blocks(task):
    ds = task.datasets["train"]
    d = task.source_dictionary
    masked = total = 0
    for i in range(len(ds)):
        s = ds[i]
        src, tgt = s["source"], s["target"]
        assert src[0] == tgt[0] == d.bos() and src[-1] == tgt[-1] == d.eos()
        assert len(tgt) <= 64
        masked += int((src == d.mask_index).sum())
        total += len(tgt)
    assert masked > 0.05 * total
    batch = ds.collater([ds[0], ds[1]])
    assert set(batch["net_input"]) == {"src_tokens", "src_lengths", "prev_output_tokens"}


def test_sentences_longer_than_a_sample_are_a_clear_error(tmp_path, bpe_dir):
    (tmp_path / "t.txt").write_text(" ".join(["word"] * 300) + "\n")
    binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    t = HFDenoisingTask.setup_task(HFDenoisingConfig(data=str(tmp_path / "bin"), tokens_per_sample=64, seed=1,
                                                     dataset_impl=None))
    with pytest.raises(TokenizerError, match="--max-line-tokens 62"):
        t.load_dataset("train")


def test_missing_split_is_a_clear_error(task):
    with pytest.raises(FileNotFoundError, match="no 'valid' split"):
        task.load_dataset("valid")


def test_random_replacements_are_ordinary_tokens(task):
    ds = task.datasets["train"]
    pool = ds.random_pool
    assert not np.isin(pool, task.source_dictionary.special_ids).any()
    assert pool.max() < task.source_dictionary.tokenizer_size


def test_batches_group_similar_lengths(task):
    ds = task.datasets["train"]
    order = ds.ordered_indices()
    assert sorted(order.tolist()) == list(range(len(ds)))
    assert (np.diff(ds.sizes[order]) >= 0).all()  # fairseq batches consecutive indices: little padding


NO_NOISE = dict(mask=0.0, permute_sentences=0.0, rotate=0.0, insert=0.0)


def token_stream(data):
    """Every token of the binarized split in order, with the document each one belongs to."""
    from fairseq.data import MMapIndexedDataset

    items = MMapIndexedDataset(str(data / "train"))
    tokens, docs, doc = [], [], 0
    for i in range(len(items)):
        if len(items[i]) == 0:  # the binarizer's document separator
            doc += 1
        tokens += items[i].tolist()
        docs += [doc] * len(items[i])
    sentences = [items[i].tolist() for i in range(len(items)) if len(items[i])]
    return tokens, np.array(docs), sentences, doc + 1


@pytest.mark.parametrize("mode", ["complete_doc", "complete", "none", "eos"])
def test_sample_break_modes(data, mode):
    """Each mode's samples, checked against the binarized stream: [bos] body eos, the bodies in order are
    the whole stream; whole sentences except in 'none'; one document per sample only in 'complete_doc'."""
    ds = make_task(data, sample_break_mode=mode, **NO_NOISE).datasets["train"]
    d = ds.dictionary
    tokens, docs, sentences, n_docs = token_stream(data)
    assert n_docs == 60
    bodies = []
    for i in range(len(ds)):
        s = ds[i]
        assert torch.equal(s["source"], s["target"])  # no noise asked for
        t = s["target"].tolist()
        assert t[0] == d.bos() and t[-1] == d.eos() and len(t) <= 64
        bodies.append(t[1:-1])
    assert [tok for b in bodies for tok in b] == tokens  # nothing lost, nothing reordered
    if mode == "eos":
        assert bodies == sentences
        return
    lengths = [len(b) for b in bodies]
    starts = np.cumsum([0] + lengths[:-1])
    docs_per_sample = [len(set(docs[a:a + n].tolist())) for a, n in zip(starts, lengths)]
    if mode == "none":  # equal blocks of 62 (room for bos and eos), sentences cut where they fall
        assert lengths[:-1] == [62] * (len(bodies) - 1) and 0 < lengths[-1] <= 62
        assert any(b[-1] != d.eos() for b in bodies)
        return
    assert all(b[-1] == d.eos() for b in bodies)  # whole sentences only
    ends = set(np.cumsum([len(x) for x in sentences]).tolist())
    assert all(int(a + n) in ends for a, n in zip(starts, lengths))  # every sample ends where a sentence does
    if mode == "complete_doc":
        assert max(docs_per_sample) == 1
    else:  # 'complete' packs across documents: fewer, fuller samples
        assert max(docs_per_sample) > 1
        assert len(bodies) < len(make_task(data, sample_break_mode="complete_doc", **NO_NOISE).datasets["train"])


def test_rotate_turns_each_sample_around(data):
    """--rotate 1: every source is the target with its body cyclically shifted (bos and eos stay)."""
    ds = make_task(data, **dict(NO_NOISE, rotate=1.0)).datasets["train"]
    rotated = 0
    for i in range(len(ds)):
        src, tgt = ds[i]["source"].tolist(), ds[i]["target"].tolist()
        assert src[0] == tgt[0] and src[-1] == tgt[-1] and len(src) == len(tgt)
        body, shifted = tgt[1:-1], src[1:-1]
        assert any(shifted == body[k:] + body[:k] for k in range(len(body)))
        rotated += shifted != body
    assert rotated > 0.8 * len(ds)


def test_insert_adds_masks_and_random_tokens(data):
    """--insert 0.2 (no other noise): ceil(0.2 * length) new tokens; without them the target is left;
    with --mask-random 0 every one is <mask>."""
    for mask_random in (0.0, 0.5):
        ds = make_task(data, **dict(NO_NOISE, insert=0.2, mask_random=mask_random)).datasets["train"]
        d = ds.dictionary
        for i in range(len(ds)):
            src, tgt = ds[i]["source"], ds[i]["target"]
            n = int(np.ceil(len(tgt) * 0.2))
            assert len(src) == len(tgt) + n and src[0] == d.bos() and src[-1] == d.eos()
            if mask_random == 0.0:
                assert torch.equal(src[src != d.mask_index], tgt)
            else:
                assert int((src == d.mask_index).sum()) == n - int(np.ceil(n * 0.5))
                inserted = Counter(src.tolist()) - Counter(tgt.tolist())
                assert sum(inserted.values()) == n  # nothing of the target was replaced
                assert not set(inserted) & set(d.special_ids.tolist()) - {d.mask_index}  # ordinary tokens
