"""The large presets build through fairseq-train's own path with our tasks, at their documented sizes.

Sizes are checked against figures computed here from the documented shapes, and the formulas against
the published parameter counts of facebook/bart-large (406,291,456) and bert-large-uncased's masked-LM
model (335,174,458), so a wrong preset, a missing layer or an extra table shows as a wrong count.
"""

from __future__ import annotations

import gc

import pytest

from conftest import make_text
from fairseq_ext.prep.binarize_dir import binarize_directory


def bart_parameters(vocab_rows: int, layers: int, d: int, ffn: int, position_rows: int) -> int:
    """BART with tied input/output embeddings, learned positions, layer-norm after the embeddings."""
    attention = 4 * (d * d + d)
    ffn_block = d * ffn + ffn + ffn * d + d
    encoder_layer = attention + ffn_block + 2 * (2 * d)
    decoder_layer = 2 * attention + ffn_block + 3 * (2 * d)
    return vocab_rows * d + 2 * position_rows * d + 2 * (2 * d) + layers * (encoder_layer + decoder_layer)


def bert_mlm_parameters(vocab_rows: int, layers: int, d: int, ffn: int, position_rows: int, types: int) -> int:
    """BERT/RoBERTa encoder and masked-LM head (dense, layer norm, bias; decoder tied to the embeddings)."""
    layer = 4 * (d * d + d) + d * ffn + ffn + ffn * d + d + 2 * (2 * d)
    embeddings = (vocab_rows + position_rows + types) * d + 2 * d
    head = d * d + d + 2 * d + vocab_rows
    return embeddings + layers * layer + head


def test_formulas_reproduce_the_published_counts():
    assert bart_parameters(50265, 12, 1024, 4096, 1026) == 406_291_456  # facebook/bart-large
    assert bert_mlm_parameters(30522, 24, 1024, 4096, 512, 2) == 335_174_458  # bert-large-uncased, MLM


def build(data, *flags):
    """Parse the flags as fairseq-train does (arch presets applied) and build task and model from them."""
    from fairseq import options, tasks

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", "fairseq_ext", *flags])
    task = tasks.setup_task(args)
    return task, task.build_model(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory, bpe_dir, bert_dir):
    root = tmp_path_factory.mktemp("models")
    (root / "t.txt").write_text("\n".join(make_text(20)) + "\n", encoding="utf-8")
    for name, tok in (("bpe", bpe_dir), ("bert", bert_dir)):
        binarize_directory(tok, {"train": root / "t.txt"}, root / name, progress=False)
    return root


def sizes(model) -> dict:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.slow  # about 400M parameters: ~20 s and 1.7 GB on CPU
def test_bart_large_builds_with_hf_denoising(data):
    task, model = build(data / "bpe", "--task", "hf_denoising", "--arch", "bart_large", "--share-all-embeddings")
    rows = len(task.source_dictionary)
    assert rows == 400  # the tokenizer's 400 ids, already a multiple of 8
    shapes = sizes(model)
    assert len(model.encoder.layers) == len(model.decoder.layers) == 12
    assert shapes["encoder.embed_tokens.weight"] == (400, 1024)
    assert shapes["encoder.embed_positions.weight"] == (1026, 1024)  # 1024 positions after pad (1) + 1
    assert shapes["encoder.layers.11.fc1.weight"] == (4096, 1024)
    assert shapes["decoder.layers.11.encoder_attn.k_proj.weight"] == (1024, 1024)
    assert model.encoder.layers[0].self_attn.num_heads == model.decoder.layers[0].self_attn.num_heads == 16
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight
    n = sum(p.numel() for p in model.parameters())
    assert n == bart_parameters(rows, 12, 1024, 4096, 1026)
    del model
    gc.collect()


@pytest.mark.slow  # about 300M parameters
def test_hf_bert_large_builds_with_hf_masked_lm(data):
    task, model = build(data / "bert", "--task", "hf_masked_lm", "--arch", "hf_bert_large",
                        "--criterion", "masked_lm_with_accuracy")
    rows = len(task.source_dictionary)
    assert rows % 8 == 0 and rows >= task.source_dictionary.tokenizer_size
    encoder = model.encoder.sentence_encoder
    shapes = sizes(model)
    assert len(encoder.layers) == 24 and encoder.layers[0].self_attn.num_heads == 16
    assert shapes["encoder.sentence_encoder.layers.23.fc1.weight"] == (4096, 1024)
    assert shapes["encoder.sentence_encoder.embed_token_types.weight"] == (2, 1024)
    # 512 positions (--tokens-per-sample) after BERT's pad (0) + 1
    assert shapes["encoder.sentence_encoder.embed_positions.weight"] == (513, 1024)
    assert {m.eps for m in model.modules() if type(m).__name__ in ("LayerNorm", "FusedLayerNorm")} == {1e-12}
    n = sum(p.numel() for p in model.parameters())
    assert n == bert_mlm_parameters(rows, 24, 1024, 4096, 513, 2)
    del model
    gc.collect()
