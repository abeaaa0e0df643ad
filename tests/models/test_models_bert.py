"""hf_bert's dataclass config: --arch presets, its flags, hydra configs and checkpoints of every age."""

from __future__ import annotations

import argparse

import pytest
import torch
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf, merge_with_parent
from fairseq.models import ARCH_CONFIG_REGISTRY, MODEL_DATACLASS_REGISTRY, build_model
from omegaconf import OmegaConf
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from fairseq_ext.convert.import_hf import import_hf
from fairseq_ext.errors import UserError
from fairseq_ext.models.bert import BERT_BASE, BERT_LARGE, DEFAULTS, BertModel, HFBertConfig, resolved_args
from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMConfig, HFMaskedLMTask

TINY = ["--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory, bert_dir):
    """A tiny BERT imported with import-hf: a data directory for the vocabulary and a checkpoint."""
    root = tmp_path_factory.mktemp("hf_bert")
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    import_hf(root / "hf", root / "start")
    return root / "start"


def parse(data, *flags) -> argparse.Namespace:
    argv = [str(data), "--task", "hf_masked_lm", "--criterion", "masked_lm_with_accuracy",
            "--tokens-per-sample", "48", *flags]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def task_for(data) -> HFMaskedLMTask:
    return HFMaskedLMTask.setup_task(HFMaskedLMConfig(data=str(data), tokens_per_sample=48, seed=1,
                                                      dataset_impl=None))


def test_hf_bert_has_a_dataclass_config_and_presets():
    assert MODEL_DATACLASS_REGISTRY["hf_bert"] is HFBertConfig
    assert ARCH_CONFIG_REGISTRY["hf_bert"] is not ARCH_CONFIG_REGISTRY["hf_bert_large"]
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)  # as fairseq's model group
    BertModel.add_args(parser)  # the flags are the dataclass's fields, none with a default of its own
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == {f for f in HFBertConfig.__dataclass_fields__ if not f.startswith("_")}
    assert vars(parser.parse_args([])) == {}  # so the --arch preset fills every unset one
    assert DEFAULTS["type_vocab_size"] == 2 and DEFAULTS["layer_norm_eps"] == 1e-12
    assert DEFAULTS["hf_model_type"] == "bert" and DEFAULTS["dropout"] == 0.1


@pytest.mark.parametrize("arch, preset", [("hf_bert", BERT_BASE), ("hf_bert_base", BERT_BASE),
                                          ("hf_bert_large", BERT_LARGE)])
def test_command_line_presets_fill_what_the_user_left_unset(imported, arch, preset):
    cfg = convert_namespace_to_omegaconf(parse(imported, "--arch", arch)).model
    assert {k: cfg[k] for k in preset} == preset and cfg._name == arch
    assert (cfg.max_positions, cfg.layernorm_embedding, cfg.layer_norm_eps) == (48, True, 1e-12)
    cfg = convert_namespace_to_omegaconf(parse(imported, "--arch", arch, "--encoder-layers", "3")).model
    assert cfg.encoder_layers == 3 and cfg.encoder_embed_dim == preset["encoder_embed_dim"]


def test_flags_reach_the_built_model(imported):
    args = parse(imported, "--arch", "hf_bert_base", "--encoder-layers", "1", *TINY, "--type-vocab-size", "3",
                 "--layer-norm-eps", "1e-5", "--hf-model-type", "roberta", "--max-positions", "40",
                 "--untie-weights-roberta", "--activation-fn", "relu")
    cfg = convert_namespace_to_omegaconf(args)
    model = build_model(cfg.model, task_for(imported))
    enc = model.encoder.sentence_encoder
    assert enc.embed_token_types.weight.shape == (3, 32) and len(enc.layers) == 1
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    assert enc.embed_positions.weight.shape[0] == 40 + 0 + 1  # max_positions + pad + 1 rows (pad is 0)
    assert model.encoder.lm_head.weight is not enc.embed_tokens.weight
    assert (model.args.hf_model_type, model.args.activation_fn) == ("roberta", "relu")
    assert OmegaConf.is_config(cfg.model) and cfg.model.hf_model_type == "roberta"  # left as it was


def test_hydra_model_section_keeps_the_preset(imported):
    """fairseq-hydra-train: `model._name: hf_bert_large` with a few keys, the rest from the dataclass."""
    cfg = OmegaConf.create({"_name": "hf_bert_large", "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                            "encoder_attention_heads": 2})
    cfg = merge_with_parent(HFBertConfig(), cfg)  # what fairseq's hydra add_defaults does
    model = build_model(cfg, task_for(imported))
    assert len(model.encoder.sentence_encoder.layers) == 24 and model.args.max_positions == 48
    overrides = (imported / "hydra_overrides.txt").read_text().split()  # model._name=hf_bert ++model.x=...
    assert overrides[0] == "model._name=hf_bert"
    cfg = OmegaConf.from_dotlist(["_name=hf_bert", *(o[len("++model."):] for o in overrides[1:])])
    model = build_model(merge_with_parent(HFBertConfig(), cfg), task_for(imported))
    assert len(model.encoder.sentence_encoder.layers) == 2 and model.args.layer_norm_eps == 1e-12


def test_the_tasks_positions_are_written_into_the_saved_settings(imported):
    """A task without --tokens-per-sample (code_contrastive) gives the positions; the model settings fairseq
    saves then hold them, so export-hf (which builds the model without the task) builds the same model."""
    cfg = merge_with_parent(HFBertConfig(), OmegaConf.create({"_name": "hf_bert", "encoder_embed_dim": 32,
                                                              "encoder_ffn_embed_dim": 64,
                                                              "encoder_attention_heads": 2}))
    OmegaConf.set_struct(cfg, True)  # as fairseq-train holds it
    assert cfg.max_positions is None
    task_for(imported).build_model(cfg)
    assert cfg.max_positions == 48 and resolved_args(cfg).max_positions == 48


def test_bad_type_vocab_size_is_a_one_line_error():
    with pytest.raises(UserError, match=r"--type-vocab-size \(model.type_vocab_size\) must be at least 1, got 0"):
        resolved_args({"_name": "hf_bert", "type_vocab_size": 0, "max_positions": 8})


def _legacy_forms(state: dict, args: argparse.Namespace) -> dict:
    """The same checkpoint as older fairseq / fairseq_ext versions wrote it."""
    flat = dict(vars(args), _name=args.arch)
    namespace_cfg = dict(state, cfg=dict(state["cfg"], model=argparse.Namespace(**flat)), task_state={})
    dict_cfg = dict(state, cfg=dict(state["cfg"], model=flat), task_state={})
    args_only = dict(state, cfg=None, args=argparse.Namespace(**vars(args)), task_state={})
    return {"cfg.model Namespace": namespace_cfg, "cfg.model dict": dict_cfg, "args Namespace": args_only}


def test_checkpoints_of_every_age_load_into_the_same_model(imported, tmp_path):
    new = imported / "checkpoint.pt"
    tokens = torch.tensor([[101, 110, 120, 130, 102]])
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(new)])
    expected = models[0].eval()(tokens)[0]
    state = checkpoint_utils.load_checkpoint_to_cpu(str(new))
    model_flags = (imported / "model_args.txt").read_text().split()
    args = parse(imported, *model_flags)
    for name, old in _legacy_forms(state, args).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(old, path)
        models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
        assert isinstance(models[0], BertModel), name
        assert torch.equal(models[0].eval()(tokens)[0], expected), name
