"""One typed settings object from any checkpoint form, with each architecture's own fairseq defaults."""

from __future__ import annotations

from argparse import Namespace

import pytest
from omegaconf import OmegaConf

from fairseq_ext.convert.common import ConversionError
from fairseq_ext.convert.registry import checkpoint_model_settings
from fairseq_ext.convert.settings import section, task_data_dir


def forms(model: dict, task: dict) -> dict:
    """The same settings as fairseq-train (Namespace), fairseq-hydra-train (dict), omegaconf and old `args`."""
    return {
        "cfg Namespace": {"cfg": {"model": Namespace(**model), "task": Namespace(**task)}},
        "cfg dict": {"cfg": {"model": dict(model), "task": dict(task)}},
        "cfg DictConfig": {"cfg": OmegaConf.create({"model": model, "task": task})},
        "args": {"cfg": None, "args": Namespace(**model, **{k: v for k, v in task.items() if k != "_name"},
                                                task=task["_name"])},
    }


@pytest.mark.parametrize("form", ["cfg Namespace", "cfg dict", "cfg DictConfig", "args"])
def test_every_form_gives_the_same_settings(form):
    model = {"_name": "hf_bert_base", "arch": "hf_bert_base", "encoder_layers": 2, "layer_norm_eps": 1e-5,
             "hf_model_type": "roberta", "max_positions": None}
    task = {"_name": "hf_masked_lm", "data": "/data/a:/data/b", "tokens_per_sample": 96}
    state = forms(model, task)[form]
    s = checkpoint_model_settings(state, "c.pt")
    assert (s.arch, s.model, s.encoder_layers, s.encoder_embed_dim) == ("hf_bert_base", "hf_bert", 2, 768)
    assert (s.layer_norm_eps, s.hf_model_type, s.type_vocab_size) == (1e-5, "roberta", 2)
    assert s.max_positions == s.positions == 96  # unset: the task's sample length, as fairseq's RoBERTa
    assert (s.layernorm_embedding, s.no_scale_embedding, s.encoder_learned_pos) == (True, True, True)
    assert s.args.arch == "hf_bert_base" and s.args.type_vocab_size == 2  # everything, for the builder
    assert task_data_dir(state) == "/data/a"
    assert section(state, "task")["tokens_per_sample"] == 96


def test_missing_values_are_the_architectures_fairseq_defaults():
    bart = checkpoint_model_settings({"args": Namespace(arch="bart_large")}, "b.pt")
    assert (bart.encoder_layers, bart.decoder_layers, bart.encoder_embed_dim, bart.decoder_attention_heads) == \
        (12, 12, 1024, 16)
    assert (bart.max_source_positions, bart.positions, bart.share_all_embeddings) == (1024, 1024, True)
    assert (bart.activation_dropout, bart.attention_dropout, bart.layernorm_embedding) == (0.0, 0.0, True)
    base = checkpoint_model_settings({"cfg": {"model": {"_name": "bart_base", "dropout": 0.3}}}, "b.pt")
    assert (base.encoder_layers, base.encoder_embed_dim, base.dropout) == (6, 768, 0.3)
    small = checkpoint_model_settings(
        {"cfg": {"model": {"_name": "roberta_small"}, "task": {"tokens_per_sample": 128}}}, "r.pt")
    assert (small.model, small.encoder_layers, small.encoder_embed_dim, small.max_positions) == \
        ("roberta", 4, 512, 128)
    assert (small.untie_weights_roberta, small.activation_fn, small.type_vocab_size) == (False, "gelu", None)
    large = checkpoint_model_settings({"cfg": {"model": {"_name": "hf_bert_large", "max_positions": 64}}}, "l")
    assert (large.encoder_layers, large.encoder_attention_heads, large.layer_norm_eps) == (24, 16, 1e-12)


def test_unknown_or_missing_settings_are_conversion_errors():
    with pytest.raises(ConversionError, match=r"^c\.pt: checkpoint has no model settings"):
        checkpoint_model_settings({"cfg": {"task": {}}}, "c.pt")
    with pytest.raises(ConversionError, match=r"^c\.pt: unknown architecture 'transformer_lm'"):
        checkpoint_model_settings({"cfg": {"model": {"_name": "transformer_lm"}}}, "c.pt")
