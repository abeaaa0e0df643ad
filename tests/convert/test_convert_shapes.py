"""Weights are checked before they are copied: a shape mismatch or an unknown weight is one line naming the
weight, its shapes and the checkpoint or directory, in both directions and for every family."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    T5Config,
    T5EncoderModel,
)

from conftest import error_lines, run_cli
from fairseq_ext.convert.common import ConversionError, load_hf_state
from fairseq_ext.convert.export import export_hf
from fairseq_ext.convert.import_hf import import_hf
from fairseq_ext.serialization import safe_torch_load
from support.hf_models import t5_dir

# family -> (a 2-D weight of the fairseq model, its transformers name, the fairseq architecture)
WEIGHTS = {
    "bart": ("encoder.layers.0.fc1.weight", "model.encoder.layers.0.fc1.weight", "bart_base"),
    "bert": ("encoder.sentence_encoder.layers.0.fc1.weight", "bert.encoder.layer.0.intermediate.dense.weight",
             "hf_bert"),
    "t5": ("encoder.layers.0.ffn.wi.weight", "encoder.block.0.layer.1.DenseReluDense.wi.weight", "t5_encoder"),
}
HF_CLASS = {"bart": "BartForConditionalGeneration", "bert": "BertForMaskedLM", "t5": "T5EncoderModel"}


def hf_dir(family, out, bpe_dir, bert_dir, spm_model):
    """A tiny transformers directory of ``family``, as save_pretrained writes it."""
    if family == "t5":
        return t5_dir(out, spm_model, "relu", T5EncoderModel)
    tok_dir = bpe_dir if family == "bart" else bert_dir
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    if family == "bart":
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))
    else:
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                           pad_token_id=0))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=sorted(WEIGHTS))
def converted(request, tmp_path_factory, bpe_dir, bert_dir, spm_model):
    """(family, its transformers directory, the fairseq checkpoint import-hf made of it)."""
    root = tmp_path_factory.mktemp(request.param)
    hf = hf_dir(request.param, root / "hf", bpe_dir, bert_dir, spm_model)
    import_hf(hf, root / "fs")
    return request.param, hf, root / "fs" / "checkpoint.pt"


def edited_checkpoint(checkpoint, out, edit):
    with open(checkpoint, "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    edit(state["model"])
    torch.save(state, out)
    return out


def edited_hf_dir(hf, out, edit):
    """A copy of the directory ``hf`` whose weights file ``edit`` changed."""
    import shutil

    shutil.copytree(hf, out)
    weights = load_file(out / "model.safetensors")
    edit(weights)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_export_refuses_a_weight_of_the_wrong_shape(converted, tmp_path):
    family, _hf, checkpoint = converted
    key, _hf_key, arch = WEIGHTS[family]
    with open(checkpoint, "rb") as f:
        good = tuple(safe_torch_load(f, map_location="cpu")["model"][key].shape)
    bad = edited_checkpoint(checkpoint, tmp_path / "bad.pt", lambda w: w.update({key: w[key].t().contiguous()}))
    with pytest.raises(ConversionError) as exc:
        export_hf(bad, tmp_path / "out")
    assert one_line(exc) == f"{bad}: weight {key!r} is {good[::-1]}, the fairseq {arch} model has it as {good}"
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_unknown_weight(converted, tmp_path):
    family, _hf, checkpoint = converted
    arch = WEIGHTS[family][2]
    bad = edited_checkpoint(checkpoint, tmp_path / "bad.pt",
                            lambda w: w.update({"encoder.extra.weight": torch.ones(3)}))
    with pytest.raises(ConversionError) as exc:
        export_hf(bad, tmp_path / "out")
    assert one_line(exc) == f"{bad}: unexpected weight 'encoder.extra.weight' (3,): the fairseq {arch} model has " \
                            "no such weight"
    assert not (tmp_path / "out").exists()


def test_import_refuses_a_weight_of_the_wrong_shape(converted, tmp_path):
    family, hf, _checkpoint = converted
    hf_key = WEIGHTS[family][1]
    good = tuple(load_file(hf / "model.safetensors")[hf_key].shape)
    bad = edited_hf_dir(hf, tmp_path / "hf", lambda w: w.update({hf_key: w[hf_key].t().contiguous()}))
    with pytest.raises(ConversionError) as exc:
        import_hf(bad, tmp_path / "out")
    assert one_line(exc) == f"{bad}: weight {hf_key!r} is {good[::-1]}, {HF_CLASS[family]} with its config.json " \
                            f"has it as {good}"
    assert not (tmp_path / "out").exists()


def test_import_refuses_an_unknown_weight(converted, tmp_path):
    """BART and T5: an error. BERT/RoBERTa drop what the masked-LM model does not use (a pooler, a
    next-sentence or classifier head) and say so: the unknown weight is in the report."""
    family, hf, _checkpoint = converted
    bad = edited_hf_dir(hf, tmp_path / "hf", lambda w: w.update({"extra.weight": torch.ones(3)}))
    if family == "bert":
        assert "extra.weight" in import_hf(bad, tmp_path / "out").dropped
        return
    with pytest.raises(ConversionError) as exc:
        import_hf(bad, tmp_path / "out")
    assert one_line(exc) == f"{bad}: unexpected weight 'extra.weight': {HF_CLASS[family]} has no such weight"
    assert not (tmp_path / "out").exists()


def test_converted_weights_are_checked_before_any_is_copied():
    """The transformers side of export (and of a T5ForConditionalGeneration import): the model is untouched."""
    model = T5EncoderModel(T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.zeros_like(v) for k, v in before.items()}
    state["encoder.final_layer_norm.weight"] = torch.zeros(9)
    with pytest.raises(ConversionError) as exc:
        load_hf_state(model, state, "ckpt.pt")
    assert one_line(exc) == "ckpt.pt: weight 'encoder.final_layer_norm.weight' is (9,), T5EncoderModel has it as (8,)"
    del state["encoder.final_layer_norm.weight"]
    with pytest.raises(ConversionError, match=r"^ckpt.pt: weight 'encoder.final_layer_norm.weight' \(8,\) of "
                                              r"T5EncoderModel is missing$"):
        load_hf_state(model, state, "ckpt.pt")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("converted", ["bart"], indirect=True)  # the messages are the library's: one family
def test_the_cli_says_it_in_one_line(converted, tmp_path):
    family, hf, checkpoint = converted
    key = WEIGHTS[family][0]
    bad = edited_checkpoint(checkpoint, tmp_path / "bad.pt", lambda w: w.update({key: w[key][:, :5]}))
    proc = run_cli("export-hf", str(bad), "-o", str(tmp_path / "out"), check=False)
    (line,) = error_lines(proc.stderr)
    assert proc.returncode == 1 and line.startswith(f"fairseq-ext export-hf: error: {bad}: weight {key!r} is (64, 5)")
    hf_key = WEIGHTS[family][1]
    bad_dir = edited_hf_dir(hf, tmp_path / "hf", lambda w: w.update({hf_key: w[hf_key][:, :5].contiguous()}))
    proc = run_cli("import-hf", str(bad_dir), "-o", str(tmp_path / "out"), check=False)
    (line,) = error_lines(proc.stderr)
    assert proc.returncode == 1 and line.startswith(f"fairseq-ext import-hf: error: {bad_dir}: weight {hf_key!r}")
    assert not (tmp_path / "out").exists()
