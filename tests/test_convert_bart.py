"""The BART conversion table: position offsets, unknown keys, tied embeddings."""

from __future__ import annotations

import pytest
import torch

from fairseq_ext.convert.bart import (
    ConversionError,
    _rename,
    hf_to_fairseq_state,
    positions_to_fairseq,
    positions_to_hf,
)


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_positions_line_up_and_round_trip(pad):
    max_pos, dim = 10, 4
    fairseq = torch.randn(max_pos + pad + 1, dim)
    hf = positions_to_hf(fairseq, pad, max_pos)
    assert hf.shape == (max_pos + 2, dim)
    for p in range(max_pos):  # position p: fairseq row p + pad + 1, transformers row p + 2
        assert torch.equal(hf[p + 2], fairseq[p + pad + 1])
    back = positions_to_fairseq(hf, pad, max_pos)
    # every used row survives; of the unused leading rows, transformers keeps two
    assert torch.equal(back[max(pad - 1, 0):], fairseq[max(pad - 1, 0):])
    if pad >= 1:  # transformers -> fairseq -> transformers is exact (the import/export round trip)
        assert torch.equal(positions_to_hf(positions_to_fairseq(hf, pad, max_pos), pad, max_pos), hf)


def test_names_map_and_unknown_keys_are_errors():
    assert _rename("encoder.layers.3.self_attn.k_proj.weight") == "model.encoder.layers.3.self_attn.k_proj.weight"
    assert _rename("decoder.layernorm_embedding.bias") == "model.decoder.layernorm_embedding.bias"
    assert _rename("encoder.embed_tokens.weight") == "model.shared.weight"
    assert _rename("decoder.output_projection.weight") is None
    with pytest.raises(ConversionError, match="unknown fairseq weight 'classification_heads.x.dense.weight'"):
        _rename("classification_heads.x.dense.weight")


def test_untied_transformers_embeddings_are_refused():
    shared = torch.randn(8, 4)
    state = {"model.shared.weight": shared, "lm_head.weight": shared + 1}
    with pytest.raises(ConversionError, match="lm_head.weight differs from model.shared.weight"):
        hf_to_fairseq_state(state, vocab_rows=8, pad=1, max_positions=4)
