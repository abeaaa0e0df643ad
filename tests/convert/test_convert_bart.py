"""The BART conversion table: position offsets, unknown keys, tied embeddings."""

from __future__ import annotations

import pytest
import torch

from fairseq_ext.convert.families.bart import (
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


def test_transformers_bart_imports_and_exports_bit_identical(tmp_path, bpe_dir):
    """A BART directory through import-hf and export-hf: the same tensors, config and card (no training)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    from conftest import model_card_rows
    from fairseq_ext.convert.common import TOLERANCE
    from fairseq_ext.convert.export import export_hf
    from fairseq_ext.convert.import_hf import import_hf

    tok = AutoTokenizer.from_pretrained(str(bpe_dir))
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    model = BartForConditionalGeneration(config)
    with torch.no_grad():  # norms and biases away from their init, so a mapping mistake shows
        for name, p in model.named_parameters():
            if p.dim() == 1 and name != "final_logits_bias":
                p.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    r = import_hf(tmp_path / "hf", tmp_path / "fs")
    assert (r.family, r.fairseq_arch, r.layers, r.fresh_head, r.dropped) == ("bart", "bart_base", "2+1", [], [])
    assert r.max_abs_diff <= TOLERANCE
    e = export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    assert e.family == "bart" and e.max_abs_diff <= TOLERANCE
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    back = BartForConditionalGeneration.from_pretrained(str(tmp_path / "back"))
    for key in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "max_position_embeddings", "pad_token_id"):
        assert getattr(back.config, key) == getattr(config, key), key
    text = (tmp_path / "back" / "README.md").read_text()
    card = model_card_rows(text)
    assert "pipeline_tag: fill-mask" in text
    assert "from transformers import AutoTokenizer, BartForConditionalGeneration" in text
    assert card["architecture"] == \
        f"bart_base: 2+1 layers, d_model 32, 4 heads, FFN 64, {back.num_parameters():,} parameters"
    assert card["objective"].startswith("hf_denoising (BART text infilling: ")
    assert card["export parity"].startswith(f"max abs logit difference {e.max_abs_diff:.2e} vs. fairseq")
