"""T5 conversion: transformers' T5 encoder <-> the fairseq ``t5_encoder``, exact both ways, bos-less vocabulary."""

from __future__ import annotations

import pytest
import torch
from fairseq import options, tasks
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

from conftest import make_text
from fairseq_ext.convert.common import TOLERANCE, ConversionError, load_hf_state, parity_batches
from fairseq_ext.convert.families import t5_weights as t5
from fairseq_ext.models.t5.model import T5EncoderFairseqModel, resolved_settings
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import SpecialRoles

PROJ = ["relu", "gated-gelu"]


class FakeTask:
    def __init__(self, dictionary):
        self.source_dictionary = dictionary

    def max_positions(self):
        return 64


@pytest.fixture(scope="module")
def dictionary(spm_model) -> TokenizerDictionary:
    d = TokenizerDictionary.from_path(spm_model, pad_to_multiple=8)  # T5 layout, no bos
    assert d.bos_index is None and len(d) > d.tokenizer_size  # vocabulary padding rows after the last id
    return d


def hf_config(dictionary, proj: str, **kw) -> T5Config:
    values = dict(vocab_size=dictionary.tokenizer_size, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj=proj,
                  pad_token_id=dictionary.pad(), eos_token_id=dictionary.eos())
    return T5Config(**{**values, **kw})


def random_hf(dictionary, proj: str, seed: int = 0, cls=T5EncoderModel):
    """A tiny transformers T5 with random weights, norms included (not left at one)."""
    torch.manual_seed(seed)
    model = cls(hf_config(dictionary, proj))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def settings(flags: list[str]):
    """The fairseq model settings that ``t5_flags`` asks for, parsed by fairseq-train's own parser."""
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       ["unused", "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", *flags])
    return resolved_settings(args)


def imported(hf, dictionary) -> T5EncoderFairseqModel:
    args = settings(t5.t5_flags(hf.config))
    model = T5EncoderFairseqModel.build_model(args, FakeTask(dictionary))
    model.load_state_dict(t5.hf_to_fairseq_state(hf.state_dict(), hf.config, len(dictionary), dictionary.pad()))
    return model.eval()


@pytest.mark.parametrize("proj", PROJ)
def test_hf_to_fairseq_parity(dictionary, proj):
    hf = random_hf(dictionary, proj)
    model = imported(hf, dictionary)
    assert model.args.feed_forward_proj == proj
    diff = t5.t5_parity(model, hf, dictionary)
    assert diff <= TOLERANCE
    # the measure is not blind: one changed weight shows
    with torch.no_grad():
        model.encoder.layers[2].ffn.wo.weight.mul_(1.01)
    assert t5.t5_parity(model, hf, dictionary) > 10 * TOLERANCE


@pytest.mark.parametrize("proj", PROJ)
def test_fairseq_to_hf_parity(dictionary, proj):
    torch.manual_seed(1)
    args = resolved_settings({"encoder_embed_dim": 32, "encoder_layers": 2, "encoder_attention_heads": 4, "kv_dim": 8,
                              "encoder_ffn_embed_dim": 64, "feed_forward_proj": proj, "pooler_dim": 8})
    model = T5EncoderFairseqModel.build_model(args, FakeTask(dictionary)).eval()
    weights = model.state_dict()
    config = t5.hf_t5_config(args, dictionary.tokenizer_size, dictionary.pad(), dictionary.eos())
    assert (config.feed_forward_proj, config.is_encoder_decoder, config.pad_token_id) == (proj, False, 0)
    hf = load_hf_state(T5EncoderModel(config), t5.fairseq_to_hf_state(weights, args, dictionary.tokenizer_size))
    assert t5.t5_parity(model, hf, dictionary) <= TOLERANCE
    assert hf.shared.weight.shape == (dictionary.tokenizer_size, 32)  # padding rows cut
    assert t5.fairseq_dropped(weights) == sorted(k for k in weights if k.split(".")[0] in ("lm_head", "pooler"))
    assert "pooler.dense.weight" in t5.fairseq_dropped(weights)
    same = hf_config(dictionary, proj, num_layers=2, relative_attention_num_buckets=32,
                     relative_attention_max_distance=128, dropout_rate=0.1)
    assert t5.t5_flags(config) == t5.t5_flags(same)


@pytest.mark.parametrize("proj", PROJ)
def test_hf_fairseq_hf_is_bit_identical(dictionary, proj):
    hf = random_hf(dictionary, proj, seed=2)
    model = imported(hf, dictionary)
    back = t5.fairseq_to_hf_state(model.state_dict(), model.args, dictionary.tokenizer_size)
    original = hf.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_encoder_of_t5_for_conditional_generation_converts_and_drops_the_rest(dictionary):
    full = random_hf(dictionary, "gated-gelu", seed=3, cls=T5ForConditionalGeneration)
    state = full.state_dict()
    dropped = t5.hf_dropped(state)
    assert dropped == sorted(k for k in state if k.startswith(("decoder.", "lm_head.")))
    assert "lm_head.weight" in dropped and "decoder.block.0.layer.1.EncDecAttention.q.weight" in dropped
    model = imported(full, dictionary)
    encoder_only = T5EncoderModel(hf_config(dictionary, "gated-gelu"))
    load_hf_state(encoder_only, {k: v for k, v in state.items() if k not in dropped})
    assert t5.t5_parity(model, encoder_only, dictionary) <= TOLERANCE


def test_import_pads_the_vocabulary_and_makes_a_fresh_head(dictionary):
    hf = random_hf(dictionary, "relu")
    state = t5.hf_to_fairseq_state(hf.state_dict(), hf.config, len(dictionary), dictionary.pad())
    emb = state["encoder.embed_tokens.weight"]
    assert emb.shape == (len(dictionary), 32) and torch.equal(emb[: dictionary.tokenizer_size], hf.shared.weight)
    assert state["lm_head.weight"] is emb and not state["lm_head.bias"].any()
    again = t5.hf_to_fairseq_state(hf.state_dict(), hf.config, len(dictionary), dictionary.pad())
    assert all(torch.equal(state[k], again[k]) for k in state)  # padding rows and head from a fixed seed
    assert sorted(k for k in state if k.startswith("lm_head.")) == sorted(t5.fresh_head(emb))


def test_unknown_missing_and_mismatched_weights_are_errors(dictionary):
    hf = random_hf(dictionary, "relu")
    state = hf.state_dict()
    with pytest.raises(ConversionError, match="unknown transformers weight 'encoder.block.0.extra'"):
        t5.hf_to_fairseq_state({**state, "encoder.block.0.extra": torch.zeros(1)}, hf.config, 104, 0)
    partial = {k: v for k, v in state.items() if "block.2." not in k}
    with pytest.raises(ConversionError, match="lacks encoder.block.2"):
        t5.hf_to_fairseq_state(partial, hf.config, 104, 0)
    with pytest.raises(ConversionError, match="pad_token_id 0 .* pad is 1"):
        t5.hf_to_fairseq_state(state, hf.config, 104, 1)
    with pytest.raises(ConversionError, match="fewer than the checkpoint"):
        t5.hf_to_fairseq_state(state, hf.config, 50, 0)
    changed = {**state, "encoder.embed_tokens.weight": state["shared.weight"] + 1}
    with pytest.raises(ConversionError, match="differ although T5 ties them"):
        t5.hf_to_fairseq_state(changed, hf.config, 104, 0)
    model = imported(hf, dictionary)
    weights = {**model.state_dict(), "encoder.layers.0.self_attn.q_proj.bias": torch.zeros(32)}
    with pytest.raises(ConversionError, match="unknown fairseq weight 'encoder.layers.0.self_attn.q_proj.bias'"):
        t5.fairseq_to_hf_state(weights, model.args, dictionary.tokenizer_size)


@pytest.mark.parametrize("change, message", [
    ({"is_decoder": True}, "is_decoder=True"),
    ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj='gated-silu'"),
])
def test_unconvertible_configs_are_refused(dictionary, change, message):
    config = hf_config(dictionary, "relu")
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(ConversionError, match=message):
        t5.t5_flags(config)


def test_flags_rebuild_the_model_through_fairseq_train(tmp_path, bpe_dir):
    """``t5_flags`` parses with fairseq-train's parser and builds, through the registries, the shapes of the config."""
    (tmp_path / "t.txt").write_text("\n".join(make_text(10)) + "\n", encoding="utf-8")
    binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "data", progress=False)
    dictionary = TokenizerDictionary.from_path(tmp_path / "data")
    config = T5Config(vocab_size=dictionary.tokenizer_size, d_model=24, d_kv=5, d_ff=40, num_layers=2, num_heads=3,
                      feed_forward_proj="gated-gelu", pad_token_id=dictionary.pad(), layer_norm_epsilon=1e-5)
    hf = T5EncoderModel(config).eval()
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(tmp_path / "data"), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", *t5.t5_flags(config)])
    task = tasks.setup_task(args)
    model = task.build_model(args).eval()
    model.load_state_dict(t5.hf_to_fairseq_state(hf.state_dict(), config, len(task.source_dictionary),
                                                  task.source_dictionary.pad()))
    assert model.encoder.layers[0].self_attn.kv_dim == 5 and model.encoder.layer_norm.eps == 1e-5
    assert t5.t5_parity(model, hf, task.source_dictionary) <= TOLERANCE  # a tokenizer with bos works too


def test_parity_batches_without_bos_end_in_eos():
    roles = SpecialRoles(bos=None, pad=0, eos=1, unk=2, mask=3)
    for src, _ in parity_batches(50, roles, [0, 1, 2, 3], 12):
        lengths = src.ne(0).sum(1)
        assert (src[torch.arange(len(src)), lengths - 1] == 1).all()  # eos last
        assert src.ne(0).logical_and(src.lt(4)).sum() == len(src)  # no special token but that eos
    with_bos = SpecialRoles(bos=0, pad=1, eos=2, unk=3, mask=4)
    for src, _ in parity_batches(50, with_bos, [0, 1, 2, 3, 4], 12):
        assert (src[:, 0] == 0).all()  # bos first, as before
