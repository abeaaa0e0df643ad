"""Masked-LM batches carry their targets' flat positions (made by the data loader on the host): the loss,
gradients and counts are those of the boolean mask, whatever the batch's padding, and a T5 step never waits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fairseq_ext.criterions.masked_lm_with_accuracy import MaskedLMWithAccuracy, MaskedLMWithAccuracyConfig
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer
from support.host_sync import NoHostSync
from support.masked_lm import batch, model


@pytest.fixture(scope="module")
def dictionary(bpe_dir):
    return TokenizerDictionary.from_tokenizer(load_tokenizer(bpe_dir), pad_to_multiple=8)


def loss_and_grads(m, crit, sample) -> tuple[torch.Tensor, object, dict, list[torch.Tensor]]:
    m.zero_grad()
    loss, sample_size, log = crit(m, sample)
    loss.backward()
    return loss.detach(), sample_size, log, [p.grad.clone() for p in m.parameters() if p.grad is not None]


@pytest.mark.parametrize("kind", ["roberta", "t5"])
def test_positions_and_mask_give_the_same_loss_and_grads(kind, dictionary):
    m = model(kind, dictionary)
    crit = MaskedLMWithAccuracy(MaskedLMWithAccuracyConfig(), SimpleNamespace(target_dictionary=dictionary))
    sample = batch(dictionary, pad_to_multiple=8)
    assert sample["net_input"]["src_tokens"].shape == (4, 24)  # the longest, 21, padded to a multiple of 8
    by_mask = {k: v for k, v in sample.items() if k not in ("masked_positions", "nmasked")}
    loss, size, log, grads = loss_and_grads(m, crit, sample)
    loss_mask, size_mask, log_mask, grads_mask = loss_and_grads(m, crit, by_mask)
    assert isinstance(size, int) and size == int(size_mask) == int(sample["target"].ne(dictionary.pad()).sum()) > 0
    torch.testing.assert_close(loss, loss_mask, rtol=1e-6, atol=1e-6)
    assert int(log["n_correct"]) == int(log_mask["n_correct"]) and int(log["total"]) == size
    assert len(grads) == len(grads_mask)
    for g, h in zip(grads, grads_mask):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)
    unpadded, *_ = loss_and_grads(m, crit, batch(dictionary, pad_to_multiple=1))  # padding is masked out
    torch.testing.assert_close(unpadded, loss, rtol=1e-5, atol=1e-5)


def test_a_t5_masked_lm_step_never_waits_for_the_device(dictionary):
    m = model("t5", dictionary)
    crit = MaskedLMWithAccuracy(MaskedLMWithAccuracyConfig(), SimpleNamespace(target_dictionary=dictionary))
    sample = batch(dictionary, pad_to_multiple=8)
    with NoHostSync(shapes=True):
        loss, sample_size, _log = crit(m, sample)
        loss.backward()
    assert sample_size == sample["nmasked"]
    by_mask = {k: v for k, v in sample.items() if k not in ("masked_positions", "nmasked")}
    with pytest.raises(AssertionError, match="depends on the data"):  # what the positions avoid
        with NoHostSync(shapes=True):
            crit(m, by_mask)


def test_a_batch_with_nothing_masked_has_zero_loss_and_size(dictionary):
    m = model("roberta", dictionary)
    crit = MaskedLMWithAccuracy(MaskedLMWithAccuracyConfig(), SimpleNamespace(target_dictionary=dictionary))
    sample = batch(dictionary, pad_to_multiple=8)
    sample["target"].fill_(dictionary.pad())
    sample["masked_positions"], sample["nmasked"] = sample["masked_positions"][:0], 0
    loss, size, log, _grads = loss_and_grads(m, crit, sample)
    assert float(loss) == 0.0 and size == 0 and int(log["total"]) == 0
