"""--init-std: a new model's weights from N(0, std); a model built to load a checkpoint keeps fairseq's init."""

from __future__ import annotations

import pytest
import torch
from fairseq import options

from conftest import make_text
from fairseq_ext.models.init import init_normal_
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.tasks.hf_denoising import HFDenoisingTask


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, bpe_dir):
    root = tmp_path_factory.mktemp("init")
    (root / "t.txt").write_text("\n".join(make_text(50, seed=1)) + "\n")
    binarize_directory(bpe_dir, {"train": root / "t.txt"}, root / "bin", max_line_tokens=62, progress=False)
    return root / "bin"


def build(data_dir, *flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "hf_denoising", "--arch", "bart_small", "--encoder-layers", "1",
        "--decoder-layers", "1", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
        "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--share-all-embeddings", *flags])
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(args)
    task = HFDenoisingTask.setup_task(cfg.task)
    torch.manual_seed(0)
    return task, cfg


def weight_std(model, name):
    return dict(model.named_parameters())[name].detach().std().item()


def test_init_std_redraws_linear_and_embedding_weights(data_dir):
    task, cfg = build(data_dir)
    default = task.build_model(cfg.model)
    task, cfg = build(data_dir, "--init-std", "0.125")
    scaled = task.build_model(cfg.model)
    for name in ["encoder.layers.0.self_attn.q_proj.weight", "decoder.layers.0.fc1.weight",
                 "encoder.embed_tokens.weight", "decoder.embed_positions.weight"]:
        assert weight_std(default, name) == pytest.approx(0.02, rel=0.15), name  # BART's init_bert_params
        assert weight_std(scaled, name) == pytest.approx(0.125, rel=0.15), name
    assert scaled.encoder.embed_tokens.weight[task.source_dictionary.pad()].eq(0).all()
    assert scaled.encoder.layers[0].self_attn.q_proj.bias.eq(0).all()
    # layer norms keep their own initialisation
    assert scaled.encoder.layernorm_embedding.weight.eq(1).all()


def test_model_built_for_a_checkpoint_is_not_redrawn(data_dir):
    task, cfg = build(data_dir, "--init-std", "0.125")
    model = task.build_model(cfg.model, from_checkpoint=True)
    assert weight_std(model, "encoder.layers.0.self_attn.q_proj.weight") == pytest.approx(0.02, rel=0.15)


def test_negative_init_std_is_refused(data_dir):
    task, cfg = build(data_dir, "--init-std", "-1")
    with pytest.raises(ValueError, match="--init-std must be >= 0, got -1"):
        task.build_model(cfg.model)
    with pytest.raises(ValueError, match="positive"):
        init_normal_(torch.nn.Linear(2, 2), 0.0)
