"""hf_denoising: registry keys, datasets from binarized data, samples independent of worker count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.tasks import TASK_REGISTRY

from conftest import make_text
from fairseq_ext.criterions.cross_entropy_with_accuracy import CrossEntropyWithAccuracy
from fairseq_ext.data.binarize_dir import binarize_directory
from fairseq_ext.tasks.hf_denoising import HFDenoisingConfig, HFDenoisingTask
from fairseq_ext.tokenizer import TokenizerError


def test_registry_keys_resolve_to_our_classes():
    assert TASK_REGISTRY["hf_denoising"] is HFDenoisingTask
    assert CRITERION_REGISTRY["cross_entropy_with_accuracy"] is CrossEntropyWithAccuracy
    assert ARCH_MODEL_REGISTRY["bart_small"].__name__ == "BARTModel"
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from fairseq_ext.models.bart import bart_small_architecture

    assert ARCH_CONFIG_REGISTRY["bart_small"] is bart_small_architecture


def test_bart_small_preset_and_user_overrides():
    from argparse import Namespace

    from fairseq_ext.models.bart import bart_small_architecture

    args = Namespace(encoder_layers=2)
    bart_small_architecture(args)
    assert (args.encoder_layers, args.decoder_layers, args.encoder_embed_dim, args.encoder_attention_heads,
            args.encoder_ffn_embed_dim) == (2, 6, 512, 8, 2048)
    assert args.share_all_embeddings and args.activation_fn == "gelu"  # the rest is bart_base


@pytest.fixture(scope="module")
def task(tmp_path_factory, bpe_dir):
    root = tmp_path_factory.mktemp("task")
    lines = make_text(300, seed=3)
    (root / "t.txt").write_text("\n".join(ln + ("\n" if i % 5 == 4 else "") for i, ln in enumerate(lines)) + "\n")
    binarize_directory(bpe_dir, {"train": root / "t.txt"}, root / "bin", max_line_tokens=62, progress=False)
    cfg = HFDenoisingConfig(data=str(root / "bin"), tokens_per_sample=64, seed=7, dataset_impl=None)
    t = HFDenoisingTask.setup_task(cfg)
    t.load_dataset("train")
    return t


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
