"""The ``t5_encoder`` model: registry, presets through fairseq-train's parser, T5's parts, heads, fp16/bf16."""

from __future__ import annotations

import argparse

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.models import (
    ARCH_MODEL_NAME_REGISTRY,
    ARCH_MODEL_REGISTRY,
    MODEL_DATACLASS_REGISTRY,
    MODEL_REGISTRY,
    build_model,
)
from omegaconf import OmegaConf
from transformers import T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

from conftest import make_text
from fairseq_ext.errors import UserError
from fairseq_ext.models.t5.model import (
    T5_BASE,
    T5_SMALL,
    T5EncoderConfig,
    T5EncoderFairseqModel,
    resolved_settings,
)
from fairseq_ext.models.t5.modules import relative_position_bucket
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.vocab.dictionary import TokenizerDictionary

TINY = {"encoder_embed_dim": 32, "encoder_layers": 3, "encoder_attention_heads": 4, "kv_dim": 8,
        "encoder_ffn_embed_dim": 64, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20}


class FakeTask:
    def __init__(self, dictionary, max_positions=64):
        self.source_dictionary, self._max = dictionary, max_positions

    def max_positions(self):
        return self._max


@pytest.fixture(scope="module")
def dictionary(spm_model) -> TokenizerDictionary:
    return TokenizerDictionary.from_path(spm_model, pad_to_multiple=8)  # T5 layout: <pad>=0, </s>=1, no bos


@pytest.fixture(scope="module")
def data(tmp_path_factory, bpe_dir):
    """A data directory for hf_masked_lm (which needs a bos; T5's own code_mlm task is not this module's)."""
    root = tmp_path_factory.mktemp("t5_models")
    (root / "t.txt").write_text("\n".join(make_text(20)) + "\n", encoding="utf-8")
    binarize_directory(bpe_dir, {"train": root / "t.txt"}, root / "bpe", progress=False)
    return root / "bpe"


def tiny(dictionary, seed: int = 0, **settings) -> T5EncoderFairseqModel:
    torch.manual_seed(seed)
    args = resolved_settings({**TINY, **settings}, FakeTask(dictionary))
    return T5EncoderFairseqModel.build_model(args, FakeTask(dictionary)).eval()


def batch(dictionary, lengths=(9, 5, 2), seed: int = 1) -> torch.Tensor:
    """Ordinary tokens ending in eos, right-padded: (B, T)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), dictionary.pad())
    for row, n in enumerate(lengths):
        src[row, : n - 1] = torch.randint(4, dictionary.tokenizer_size, (n - 1,), generator=g)
        src[row, n - 1] = dictionary.eos()
    return src


def build(data, *flags):
    """Parse the flags as fairseq-train does and build task and model through fairseq's registries."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm",
                                                "--tokens-per-sample", "64", *flags])
    task = tasks.setup_task(args)
    return task, task.build_model(args)


def test_keys_resolve_to_our_classes():
    assert MODEL_REGISTRY["t5_encoder"] is T5EncoderFairseqModel
    assert MODEL_DATACLASS_REGISTRY["t5_encoder"] is T5EncoderConfig
    for arch in ("t5_encoder", "t5_encoder_small", "t5_encoder_base"):
        assert ARCH_MODEL_REGISTRY[arch] is T5EncoderFairseqModel
        assert ARCH_MODEL_NAME_REGISTRY[arch] == "t5_encoder"


def test_flags_are_the_dataclass_fields_without_defaults():
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    T5EncoderFairseqModel.add_args(parser)
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f for f in T5EncoderConfig.__dataclass_fields__ if not f.startswith("_")}
    assert vars(parser.parse_args([])) == {}  # so the --arch preset fills every unset one


@pytest.mark.parametrize("arch, preset", [("t5_encoder", T5_SMALL), ("t5_encoder_small", T5_SMALL),
                                          ("t5_encoder_base", T5_BASE)])
def test_presets_have_the_advertised_sizes(arch, preset):
    args = resolved_settings({"_name": arch})
    assert {k: getattr(args, k) for k in preset} == preset
    assert (args.feed_forward_proj, args.relative_attention_num_buckets, args.relative_attention_max_distance,
            args.layer_norm_eps, args.max_positions) == ("relu", 32, 128, 1e-6, 512)
    assert T5_SMALL == {"encoder_embed_dim": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "kv_dim": 64,
                        "encoder_ffn_embed_dim": 2048}
    assert T5_BASE == {"encoder_embed_dim": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "kv_dim": 64,
                       "encoder_ffn_embed_dim": 3072}


@pytest.mark.parametrize("arch, preset", [("t5_encoder", T5_SMALL), ("t5_encoder_small", T5_SMALL),
                                          ("t5_encoder_base", T5_BASE)])
def test_command_line_presets_fill_what_the_user_left_unset(data, arch, preset):
    """``--arch t5_encoder`` is t5-small's size as ``t5_encoder_small`` is: the preset's sizes are in the command
    line's settings (what a checkpoint's ``cfg.model`` records), the user's own flags kept."""
    argv = [str(data), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", "--tokens-per-sample", "64",
            "--arch", arch]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv)).model
    assert {k: cfg[k] for k in preset} == preset and cfg._name == arch and cfg.max_positions == 64
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(), [*argv, "--encoder-layers", "3"])).model
    assert cfg.encoder_layers == 3 and cfg.encoder_embed_dim == preset["encoder_embed_dim"]


def test_small_preset_builds_through_fairseq_train_as_large_as_transformers_t5_small(data):
    task, model = build(data, "--arch", "t5_encoder_small", "--dropout", "0.0")
    rows = len(task.source_dictionary)
    enc = model.encoder
    assert len(enc.layers) == 6 and enc.embed_tokens.weight.shape == (rows, 512)
    assert enc.layers[5].ffn.wi.weight.shape == (2048, 512)
    assert enc.layers[0].self_attn.q_proj.weight.shape == (512, 512)
    assert model.max_positions() == 64  # the task's --tokens-per-sample
    hf = T5EncoderModel(T5Config(vocab_size=rows))  # T5Config's defaults are t5-small
    hf_count = sum(p.numel() for p in hf.parameters())  # shared and embed_tokens are one tensor
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("lm_head.") and n != "lm_head.weight")
    assert sum(p.numel() for p in model.parameters()) - head == hf_count


def test_base_preset_and_overrides_reach_the_built_model(data):
    _, model = build(data, "--arch", "t5_encoder_base", "--encoder-layers", "2", "--feed-forward-proj", "gated-gelu",
                     "--max-positions", "48", "--pooler-dim", "16")
    enc = model.encoder
    assert len(enc.layers) == 2 and enc.embed_tokens.weight.shape[1] == 768
    attn = enc.layers[1].self_attn
    assert (attn.heads, attn.kv_dim, attn.q_proj.weight.shape) == (12, 64, (768, 768))
    assert enc.layers[0].ffn.wi_0.weight.shape == enc.layers[0].ffn.wi_1.weight.shape == (3072, 768)
    assert model.max_positions() == 48 and model.pooler.dense.weight.shape == (16, 768)


def test_hydra_and_checkpoint_configs_build_through_fairseq(data):
    """fairseq-train's DictConfig (``_name`` the arch), a hydra ``model: t5_encoder`` node, a checkpoint's cfg."""
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", "--arch", "t5_encoder_base",
        "--encoder-layers", "1"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = build_model(cfg.model, task)
    assert cfg.model._name == "t5_encoder_base"
    assert (len(model.encoder.layers), model.args.encoder_embed_dim, model.max_positions()) == (1, 768, 512)
    hydra = OmegaConf.create({"_name": "t5_encoder", "encoder_layers": 1, "feed_forward_proj": "gated-gelu"})
    model = build_model(hydra, task)
    assert model.args.encoder_embed_dim == 512 and model.encoder.layers[0].ffn.gated
    saved = OmegaConf.create(OmegaConf.to_container(cfg.model, enum_to_str=True))  # as a checkpoint holds it
    assert resolved_settings(saved).encoder_embed_dim == 768


def test_bad_settings_are_one_line_user_errors(dictionary):
    with pytest.raises(UserError, match="relative-attention-num-buckets"):
        resolved_settings({**TINY, "relative_attention_num_buckets": 2})
    with pytest.raises(UserError, match="kv-dim"):
        resolved_settings({**TINY, "kv_dim": 0})
    with pytest.raises(UserError, match="feed-forward-proj"):
        resolved_settings({**TINY, "feed_forward_proj": "gated-silu"})


def test_relative_buckets_equal_transformers_on_a_grid():
    rel = torch.arange(-300, 301)[None, :] - torch.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20), (16, 64)):
            ours = relative_position_bucket(rel, bidirectional, buckets, distance)
            theirs = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
            assert torch.equal(ours, theirs) and int(ours.max()) == buckets - 1


def test_bias_table_only_in_layer_zero_and_no_biases_or_positions(dictionary):
    model = tiny(dictionary)
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if "relative_attention_bias" in n] == [
        "encoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert model.encoder.layers[0].self_attn.relative_attention_bias.weight.shape == (8, 4)
    assert not [n for n in names if n.startswith("encoder.") and n.endswith(".bias")]
    assert not [n for n in names if "position" in n and "relative" not in n]


def test_fresh_weights_follow_t5_initialisation(dictionary):
    """Each tensor's spread as transformers' T5 initialises it (factor 1.0)."""
    settings = {"encoder_embed_dim": 96, "encoder_ffn_embed_dim": 384, "kv_dim": 12, "encoder_attention_heads": 8,
                "relative_attention_num_buckets": 32}
    model = tiny(dictionary, **settings)
    expected = {"encoder.embed_tokens.weight": 1.0, "self_attn.q_proj.weight": (96 * 12) ** -0.5,
                "self_attn.k_proj.weight": 96 ** -0.5, "self_attn.v_proj.weight": 96 ** -0.5,
                "self_attn.out_proj.weight": (8 * 12) ** -0.5, "relative_attention_bias.weight": 96 ** -0.5,
                "ffn.wi.weight": 96 ** -0.5, "ffn.wo.weight": 384 ** -0.5}
    state = model.state_dict()
    for suffix, std in expected.items():
        tensors = [t for n, t in state.items() if n.endswith(suffix)]
        assert tensors and all(abs(float(t.std()) / std - 1) < 0.15 for t in tensors), suffix
    assert all(bool(t.eq(1).all()) for n, t in state.items() if "layer_norm" in n)


def test_masked_tokens_project_only_those_positions(dictionary):
    model = tiny(dictionary)
    src = batch(dictionary)
    logits = model(src)[0]  # (B, T, V)
    assert logits.shape == (*src.shape, len(dictionary))
    masked = src.ne(dictionary.pad()) & (torch.arange(src.size(1)) % 2 == 0)
    part = model(src, masked_tokens=masked)[0]  # (N, V)
    assert part.shape == (int(masked.sum()), len(dictionary))
    torch.testing.assert_close(part, logits[masked])
    assert model.lm_head.weight is model.encoder.embed_tokens.weight


def test_features_and_inner_states(dictionary):
    model = tiny(dictionary)
    src = batch(dictionary)
    x, extra = model(src, features_only=True, return_all_hiddens=True)
    assert x.shape == (*src.shape, 32) and len(extra["inner_states"]) == 3 + 1
    assert all(s.shape == (src.size(1), src.size(0), 32) for s in extra["inner_states"])  # (T, B, C)
    torch.testing.assert_close(model.encoder.layer_norm(extra["inner_states"][-1].transpose(0, 1)), x)
    assert model(src, features_only=True)[1]["inner_states"] == []


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_pooled_embedding_ignores_padding(dictionary, pooling):
    model = tiny(dictionary, pooling=pooling, pooler_dim=16, pooler_normalize=True)
    src = batch(dictionary, lengths=(7, 4))
    longer = torch.cat([src, torch.full((2, 5), dictionary.pad())], dim=1)
    emb = model.embed(src)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(model.embed(longer), emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    alone = model.embed(src[1:, :4])  # the second row without any padding
    torch.testing.assert_close(alone, emb[1:], atol=1e-5, rtol=1e-5)
    features = model(src, features_only=True)[0]
    pooled = features[:, 0] if pooling == "first" else features[1, :4].mean(0).expand(2, -1)
    row = 0 if pooling == "first" else 1
    expected = torch.nn.functional.normalize(model.pooler.dense(pooled[row]), dim=-1)
    torch.testing.assert_close(emb[row], expected, atol=1e-5, rtol=1e-5)


def test_pooler_is_separate_and_optional(dictionary):
    plain = tiny(dictionary, pooler_dim=0)
    assert not [n for n in plain.state_dict() if n.startswith("pooler.")]
    src = batch(dictionary)
    torch.testing.assert_close(plain.embed(src)[0], plain(src, features_only=True)[0][0, :9].mean(0))
    assert set(n for n in tiny(dictionary, pooler_dim=8).state_dict() if n.startswith("pooler.")) == {
        "pooler.dense.weight"}


@torch.no_grad()
def test_fp16_stays_finite_where_fp32_exceeds_its_range(dictionary):
    """Activations beyond 65504 in fp32: fp16 clamps them as transformers does and stays close."""
    model = tiny(dictionary, encoder_layers=2)
    model.encoder.layers[0].ffn.wo.weight[5].fill_(1e4)  # channel 5 of the residual stream grows past 1e5
    src = batch(dictionary)
    keep = src.ne(dictionary.pad())
    x32, extra = model(src, features_only=True, return_all_hiddens=True)
    assert float(extra["inner_states"][1].abs().max()) > 1e5  # really out of fp16's range
    x16 = model.half()(src, features_only=True)[0]
    assert torch.isfinite(x16).all()
    assert float((x16.float() - x32).abs()[keep].max()) < 0.05


def test_bf16_forward_and_backward_are_finite_and_close(dictionary):
    model = tiny(dictionary, feed_forward_proj="gated-gelu")
    src = batch(dictionary)
    keep = src.ne(dictionary.pad())
    with torch.no_grad():
        ref = model(src, features_only=True)[0]
    low = model.to(torch.bfloat16).train()
    logits = low(src, masked_tokens=keep)[0]
    logits.float().logsumexp(-1).sum().backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    grads = [p.grad for p in low.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        x = low.eval()(src, features_only=True)[0]
    assert float((x.float() - ref).abs()[keep].max()) < 0.1
