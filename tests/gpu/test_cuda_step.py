"""On a GPU: a t5_encoder masked-LM step (forward, loss, backward) never makes the host wait for the device
(torch's own sync debug mode, set to raise), and the boolean-mask path it replaces does. Skipped without CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fairseq import utils

from fairseq_ext.criterions.masked_lm_with_accuracy import MaskedLMWithAccuracy, MaskedLMWithAccuracyConfig
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer
from support.masked_lm import batch, model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: host-device syncs of a step")]


def test_a_t5_masked_lm_step_on_cuda_never_syncs(bpe_dir):
    d = TokenizerDictionary.from_tokenizer(load_tokenizer(bpe_dir), pad_to_multiple=8)
    m = model("t5", d).cuda().train()
    crit = MaskedLMWithAccuracy(MaskedLMWithAccuracyConfig(), SimpleNamespace(target_dictionary=d))
    sample = utils.move_to_cuda(batch(d, pad_to_multiple=8))
    crit(m, sample)[0].backward()  # warm-up: lazy initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, sample_size, _log = crit(m, sample)
        loss.backward()
        by_mask = {k: v for k, v in sample.items() if k not in ("masked_positions", "nmasked")}
        with pytest.raises(RuntimeError, match="synchroniz"):
            crit(m, by_mask)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sample_size == sample["nmasked"] and torch.isfinite(loss).item()
