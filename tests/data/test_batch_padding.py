"""--pad-to-multiple: batches padded to a multiple of 8 (what tensor cores want) hold the same tokens and give
the same loss; 0 means 8 when training on CUDA, 1 on a CPU (--cpu or no GPU); a negative value is one line
naming the setting."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq.models.bart.model import BARTModel, bart_base_architecture

from fairseq_ext.criterions.cross_entropy_with_accuracy import CrossEntropyWithAccuracy
from fairseq_ext.data.denoising_dataset import HFDenoisingDataset
from fairseq_ext.data.noising import NoiseConfig
from fairseq_ext.errors import UserError
from fairseq_ext.tasks.base import TokenizerDataTask
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer


def denoising_batch(d, pad_to_multiple: int) -> dict:
    rng = np.random.default_rng(1)
    blocks = [torch.from_numpy(np.concatenate([[d.bos()], rng.integers(10, d.tokenizer_size, n - 2), [d.eos()]]))
              for n in (11, 17, 6)]
    data = HFDenoisingDataset(blocks, [len(b) for b in blocks], d, NoiseConfig(), seed=2,
                              pad_to_multiple=pad_to_multiple)
    return data.collater([data[i] for i in range(len(blocks))])


def tiny_bart(d) -> BARTModel:
    torch.manual_seed(0)
    args = argparse.Namespace(encoder_layers=1, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                              encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64, encoder_attention_heads=4,
                              decoder_attention_heads=4, share_all_embeddings=True, max_source_positions=64,
                              max_target_positions=64, task="hf_denoising")
    bart_base_architecture(args)
    return BARTModel.build_model(args, SimpleNamespace(source_dictionary=d, target_dictionary=d)).eval()


def test_denoising_batches_padded_to_eight_hold_the_same_tokens_and_loss(bpe_dir):
    d = TokenizerDictionary.from_tokenizer(load_tokenizer(bpe_dir), pad_to_multiple=8)
    plain, padded = denoising_batch(d, 1), denoising_batch(d, 8)
    pairs = [(plain["net_input"]["src_tokens"], padded["net_input"]["src_tokens"]),
             (plain["net_input"]["prev_output_tokens"], padded["net_input"]["prev_output_tokens"]),
             (plain["target"], padded["target"])]
    for a, b in pairs:
        assert b.size(1) % 8 == 0 and b.size(1) > a.size(1) and b.size(0) == a.size(0)
        assert torch.equal(b[:, :a.size(1)], a) and b[:, a.size(1):].eq(d.pad()).all()
    assert padded["ntokens"] == plain["ntokens"]
    model, crit = tiny_bart(d), CrossEntropyWithAccuracy(SimpleNamespace(target_dictionary=d), sentence_avg=False)
    (loss_plain, size, _), (loss_padded, size_padded, _) = crit(model, plain), crit(model, padded)
    assert size == size_padded
    torch.testing.assert_close(loss_padded, loss_plain, rtol=1e-5, atol=1e-5)


def test_pad_to_multiple_resolves_and_refuses_a_negative_value():
    def resolved(value: int, cpu: bool = False) -> int:
        cfg = SimpleNamespace(pad_to_multiple=value, cpu=cpu)
        return TokenizerDataTask.batch_length_multiple(SimpleNamespace(cfg=cfg))

    assert resolved(0) == (8 if torch.cuda.is_available() else 1) and resolved(16) == 16 and resolved(1) == 1
    assert resolved(0, cpu=True) == 1 and resolved(16, cpu=True) == 16
    with pytest.raises(UserError, match=r"^--pad-to-multiple \(task.pad_to_multiple\) must be 0 .* got -8$"):
        resolved(-8)
