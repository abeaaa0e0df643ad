"""import-hf / export-hf of T5: T5EncoderModel or T5ForConditionalGeneration in, T5EncoderModel out, exact both ways."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, T5ForConditionalGeneration

from conftest import make_text, model_card_rows, run_cli
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.export import export_hf
from fairseq_ext.convert.import_hf import import_hf
from fairseq_ext.models.t5.model import T5EncoderFairseqModel, resolved_settings
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from support.hf_models import t5_dir

CONFIG_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets",
                 "relative_attention_max_distance", "feed_forward_proj", "layer_norm_epsilon", "dropout_rate",
                 "pad_token_id", "eos_token_id")
CASES = [("relu", T5EncoderModel), ("gated-gelu", T5EncoderModel), ("relu", T5ForConditionalGeneration),
         ("gated-gelu", T5ForConditionalGeneration)]


def batch(tok_dir):
    """Real text of different lengths, padded: (B, T) ids and mask; T5's tokenizer adds </s>, no bos."""
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    enc = tok(make_text(4, seed=5), padding=True, return_tensors="pt")
    assert enc["attention_mask"].eq(0).any() and tok.bos_token_id is None
    return enc["input_ids"], enc["attention_mask"]


def fairseq_from_disk(fs_dir) -> T5EncoderFairseqModel:
    """The imported checkpoint as the t5_encoder model builds it, strict state-dict load."""
    state = safe_torch_load(fs_dir / "checkpoint.pt", map_location="cpu")
    dictionary = TokenizerDictionary.from_path(fs_dir, pad_to_multiple=8)

    class Task:
        source_dictionary = dictionary

        def max_positions(self):
            return 512

    model = T5EncoderFairseqModel.build_model(resolved_settings(state["cfg"]["model"]), Task())
    model.load_state_dict(state["model"], strict=True)
    return model.eval()


def hidden_diff(a, b, mask) -> float:
    return float((a - b).abs()[mask.bool()].max())


@pytest.mark.parametrize("proj,cls", CASES, ids=[f"{p}-{c.__name__}" for p, c in CASES])
def test_import_then_export_is_exact_and_bit_identical(tmp_path, spm_model, proj, cls):
    hf = t5_dir(tmp_path / "hf", spm_model, proj, cls)
    r = import_hf(hf, tmp_path / "fs", seed=3)
    assert (r.family, r.fairseq_arch, r.vocab, r.rows) == ("t5", "t5_encoder", 100, 104)
    assert r.max_abs_diff <= TOLERANCE and r.layers == "2" and r.d_model == 32
    assert r.fresh_head == ["lm_head.bias", "lm_head.dense.bias", "lm_head.dense.weight", "lm_head.layer_norm.weight"]
    if cls is T5ForConditionalGeneration:
        n_decoder = sum(k.startswith("decoder.") for k in cls.from_pretrained(str(hf)).state_dict())
        assert r.dropped == [f"decoder.* ({n_decoder} weights)", "lm_head.weight"]
    else:
        assert r.dropped == []
    flags = (tmp_path / "fs" / "model_args.txt").read_text().split()
    assert flags[:2] == ["--arch", "t5_encoder"] and flags[flags.index("--feed-forward-proj") + 1] == proj
    assert "model._name=t5_encoder" in (tmp_path / "fs" / "hydra_overrides.txt").read_text().split()

    ids, mask = batch(hf)
    original = T5EncoderModel.from_pretrained(str(hf)).eval()  # a whole T5: its encoder
    fairseq = fairseq_from_disk(tmp_path / "fs")
    with torch.no_grad():
        expected = original(input_ids=ids, attention_mask=mask).last_hidden_state
        got = fairseq(ids, features_only=True)[0]  # (B, T, C)
    assert hidden_diff(got, expected, mask) <= TOLERANCE  # transformers -> fairseq

    e = export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    assert e.family == "t5" and e.max_abs_diff <= TOLERANCE
    # AutoModel maps model_type t5 to T5Model (encoder and decoder); the encoder loads with T5EncoderModel
    exported, info = T5EncoderModel.from_pretrained(str(tmp_path / "back"), output_loading_info=True)
    assert not any(info.values()) and AutoConfig.from_pretrained(str(tmp_path / "back")).architectures == \
        ["T5EncoderModel"]
    exported.eval()
    with torch.no_grad():
        assert hidden_diff(exported(input_ids=ids, attention_mask=mask).last_hidden_state, got, mask) <= TOLERANCE
    a, b = original.state_dict(), exported.state_dict()
    assert sorted(a) == sorted(b)
    for key in a:  # fairseq -> transformers: every tensor as it was
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    for field in CONFIG_FIELDS:
        assert getattr(exported.config, field) == getattr(original.config, field), field
    texts = make_text(6, seed=9)
    tok_a, tok_b = (AutoTokenizer.from_pretrained(str(d)) for d in (hf, tmp_path / "back"))
    assert type(tok_a) is type(tok_b) and tok_a(texts).input_ids == tok_b(texts).input_ids
    assert tok_b.model_input_names == ["input_ids", "attention_mask"]

    card_text = (tmp_path / "back" / "README.md").read_text()
    card = model_card_rows(card_text)
    assert "pipeline_tag: feature-extraction" in card_text and "fill-mask" not in card_text
    assert "`lm_head.*`) and pooled-embedding projection (`pooler.*`" in card_text
    assert f'model = T5EncoderModel.from_pretrained("{tmp_path / "back"}")' in card_text
    assert card["architecture"].startswith(f"t5_encoder: 2 layers, d_model 32, 4 heads of 8, FFN 64 ({proj})")
    assert card["architecture"].endswith(f", {exported.num_parameters():,} parameters")
    assert card["export parity"].startswith(f"max abs hidden-state difference {e.max_abs_diff:.2e}")
    assert card["started from"] == f"`{hf}` (fairseq-ext import-hf)"

    import_hf(tmp_path / "back", tmp_path / "fs2", seed=3)  # and round again: the same files
    export_hf(tmp_path / "fs2" / "checkpoint.pt", tmp_path / "back2")
    one, two = (load_file(d / "model.safetensors") for d in (tmp_path / "back", tmp_path / "back2"))
    assert sorted(one) == sorted(two) and all(torch.equal(one[k], two[k]) for k in one)
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == \
        json.loads((tmp_path / "back2" / "config.json").read_text())
    m1, m2 = (safe_torch_load(d / "checkpoint.pt", map_location="cpu")["model"]
              for d in (tmp_path / "fs", tmp_path / "fs2"))
    assert torch.equal(m1["lm_head.dense.weight"], m2["lm_head.dense.weight"])  # the new head: from --seed


def test_cli_says_what_it_drops_and_exports_an_encoder(tmp_path, spm_model):
    hf = t5_dir(tmp_path / "hf", spm_model, "gated-gelu", T5ForConditionalGeneration, seed=1)
    proc = run_cli("import-hf", str(hf), "-o", str(tmp_path / "fs"), "--seed", "4")
    assert "imported t5 as fairseq t5_encoder: 2 layers, d_model 32, 100 tokens (104 embedding rows)" in proc.stdout
    assert "parity: max |hidden-state difference| transformers vs fairseq" in proc.stdout
    dropped = next(ln for ln in proc.stdout.splitlines() if ln.startswith("note: dropped"))
    assert "decoder.* (" in dropped and "lm_head.weight" in dropped
    assert "freshly initialised (seed 4): lm_head.bias, lm_head.dense.bias" in proc.stdout
    proc = run_cli("export-hf", str(tmp_path / "fs" / "checkpoint.pt"), "-o", str(tmp_path / "back"))
    assert "parity: max |hidden-state difference| fairseq vs transformers" in proc.stdout
    assert "exported t5 (" in proc.stdout
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == ["T5EncoderModel"]


def test_unconvertible_t5_is_refused_and_nothing_written(tmp_path, spm_model):
    hf = t5_dir(tmp_path / "hf", spm_model, "gated-silu", T5EncoderModel)
    with pytest.raises(ConversionError, match=f"^{hf}: feed_forward_proj='gated-silu': t5_encoder supports relu "
                                              "and gated-gelu$"):
        import_hf(hf, tmp_path / "fs")
    assert not (tmp_path / "fs").exists()
