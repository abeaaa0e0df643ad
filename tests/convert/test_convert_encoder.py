"""BERT / RoBERTa <-> fairseq: exact MLM logits, bit-identical round trips, bare encoders, family choice."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForMaskedLM,
)

from conftest import error_lines, model_card_rows, run_cli
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.export import export_hf, hf_family
from fairseq_ext.convert.families.bert_weights import fairseq_to_hf_state, hf_to_fairseq_state, rename_table
from fairseq_ext.convert.import_hf import import_hf
from fairseq_ext.serialization import safe_torch_load

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def randomise(model, seed):
    """Weights far from their init (LN weights != 1, biases != 0), so a mapping mistake shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() > 1 else 0.3) + (p.dim() == 1) * 0.5)
    return model


def save_hf(model, tok_dir, out):
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(out)
    return out


def bert(bert_dir, cls=BertForMaskedLM, **kw):
    vocab = len(AutoTokenizer.from_pretrained(str(bert_dir)))
    return randomise(cls(BertConfig(vocab_size=vocab, max_position_embeddings=64, pad_token_id=0, **SIZE, **kw)), 1)


def roberta(bpe_dir, **kw):
    vocab = len(AutoTokenizer.from_pretrained(str(bpe_dir)))
    config = RobertaConfig(vocab_size=vocab, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, layer_norm_eps=1e-5, **SIZE, **kw)
    return randomise(RobertaForMaskedLM(config), 2)


def assert_same_weights(a_dir, b_dir, keys=None):
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    keys = sorted(a) if keys is None else keys
    assert set(keys) <= set(b), sorted(set(keys) - set(b))
    for key in keys:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def fairseq_logits(checkpoint, tokens):
    """The MLM logits of the checkpoint as fairseq itself loads it from disk."""
    from fairseq import checkpoint_utils

    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    with torch.no_grad():
        return models[0].eval()(tokens)[0]


def sentences(tok_dir):
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    batch = tok(["the quick brown fox jumps over the lazy dog.", "students read books!"], padding=True,
                return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_bert_imports_exactly_and_exports_bit_identical(tmp_path, bert_dir):
    hf = save_hf(bert(bert_dir), bert_dir, tmp_path / "hf")
    r = import_hf(hf, tmp_path / "fs")
    assert (r.family, r.fairseq_arch, r.fresh_head, r.dropped) == ("bert", "hf_bert", [], [])
    assert r.max_abs_diff <= TOLERANCE and r.rows % 8 == 0 and r.rows >= r.vocab
    ids, mask = sentences(bert_dir)
    with torch.no_grad():
        expected = BertForMaskedLM.from_pretrained(str(hf)).eval()(input_ids=ids, attention_mask=mask).logits
    got = fairseq_logits(tmp_path / "fs" / "checkpoint.pt", ids)[..., : r.vocab]
    assert float((got - expected).abs()[mask.bool()].max()) <= TOLERANCE
    flags = (tmp_path / "fs" / "model_args.txt").read_text().split()
    assert flags[flags.index("--layer-norm-eps") + 1] == "1e-12" and "--type-vocab-size" in flags

    e = export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    assert e.family == "bert" and e.max_abs_diff <= TOLERANCE
    assert_same_weights(hf, tmp_path / "back")
    exported = BertForMaskedLM.from_pretrained(str(tmp_path / "back"))
    c, card = exported.config, model_card_rows((tmp_path / "back" / "README.md").read_text())
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 32, 4, 64)
    assert card["architecture"] == (f"hf_bert: {c.num_hidden_layers} layers, d_model {c.hidden_size}, "
                                    f"{c.num_attention_heads} heads, FFN {c.intermediate_size}, "
                                    f"{exported.num_parameters():,} parameters")
    assert card["started from"] == f"`{hf}` (fairseq-ext import-hf)"
    assert (card["updates"], card["validation loss"]) == ("0", "n/a")
    assert card["tokenizer"].endswith(f"({c.max_position_embeddings} positions)")
    assert card["export parity"].startswith(f"max abs logit difference {e.max_abs_diff:.2e} vs. fairseq")
    a, b = (json.loads((d / "config.json").read_text()) for d in (hf, tmp_path / "back"))
    for key in ("vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act",
                "pad_token_id", "architectures"):
        assert a[key] == b[key], key


def test_untied_output_projection_round_trips(tmp_path, bert_dir):
    model = bert(bert_dir, tie_word_embeddings=False)
    assert not torch.equal(model.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight)
    # transformers 5 unties the two output biases too; only cls.predictions.decoder.bias is used
    hf = save_hf(model, bert_dir, tmp_path / "hf")
    r = import_hf(hf, tmp_path / "fs")
    assert "--untie-weights-roberta" in r.model_flags and r.max_abs_diff <= TOLERANCE
    assert any(d.startswith("cls.predictions.bias (unused") for d in r.dropped)
    with torch.no_grad():  # with equal biases (as transformers 4 saves them) the round trip is exact
        model.cls.predictions.bias.copy_(model.cls.predictions.decoder.bias)
    hf = save_hf(model, bert_dir, tmp_path / "hf-equal")
    r = import_hf(hf, tmp_path / "fs-equal")
    assert r.dropped == []
    export_hf(tmp_path / "fs-equal" / "checkpoint.pt", tmp_path / "back")
    assert_same_weights(hf, tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["tie_word_embeddings"] is False


def test_bert_exported_as_roberta_gives_the_same_logits(tmp_path, bert_dir):
    hf = save_hf(bert(bert_dir), bert_dir, tmp_path / "hf")
    import_hf(hf, tmp_path / "fs")
    export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "rob", family="roberta")
    as_roberta = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "rob")).eval()
    assert type(as_roberta).__name__ == "RobertaForMaskedLM"
    ids, mask = sentences(bert_dir)
    with torch.no_grad():
        a = BertForMaskedLM.from_pretrained(str(hf)).eval()(input_ids=ids, attention_mask=mask).logits
        b = as_roberta(input_ids=ids, attention_mask=mask).logits
    assert float((a - b).abs()[mask.bool()].max()) <= TOLERANCE


def test_released_style_roberta_becomes_fairseqs_own_roberta(tmp_path, bpe_dir):
    model = roberta(bpe_dir, type_vocab_size=1)
    with torch.no_grad():  # as the released RoBERTa checkpoints: one zero token-type row
        model.roberta.embeddings.token_type_embeddings.weight.zero_()
    hf = save_hf(model, bpe_dir, tmp_path / "hf")
    r = import_hf(hf, tmp_path / "fs")
    assert r.fairseq_arch == "roberta" and "--type-vocab-size" not in r.model_flags
    state = safe_torch_load(tmp_path / "fs" / "checkpoint.pt", map_location="cpu")
    assert not any("token_types" in k for k in state["model"])
    ids, mask = sentences(bpe_dir)
    with torch.no_grad():
        expected = model.eval()(input_ids=ids, attention_mask=mask).logits
    got = fairseq_logits(tmp_path / "fs" / "checkpoint.pt", ids)[..., : r.vocab]
    assert float((got - expected).abs()[mask.bool()].max()) <= TOLERANCE
    export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    assert_same_weights(hf, tmp_path / "back")


def test_roberta_with_token_types_keeps_them_and_its_family(tmp_path, bpe_dir):
    hf = save_hf(roberta(bpe_dir, type_vocab_size=2), bpe_dir, tmp_path / "hf")
    r = import_hf(hf, tmp_path / "fs")
    assert r.fairseq_arch == "hf_bert" and r.model_flags[r.model_flags.index("--hf-model-type") + 1] == "roberta"
    e = export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    assert e.family == "roberta"
    assert_same_weights(hf, tmp_path / "back")


def test_bare_encoder_gets_a_fresh_head_said_clearly(tmp_path, bert_dir):
    base = bert(bert_dir, cls=BertModel)
    hf = save_hf(base, bert_dir, tmp_path / "hf")
    proc = run_cli("import-hf", str(hf), "-o", str(tmp_path / "fs"), "--seed", "3")
    assert "no MLM head" in proc.stdout and "freshly initialised" in proc.stdout and "seed 3" in proc.stdout
    assert "cls.predictions.transform.dense.weight" in proc.stdout
    assert "dropped" in proc.stdout and "pooler.dense.weight" in proc.stdout
    run_cli("export-hf", str(tmp_path / "fs" / "checkpoint.pt"), "-o", str(tmp_path / "back"))
    back = load_file(tmp_path / "back" / "model.safetensors")
    for key, value in base.state_dict().items():  # the encoder itself is unchanged
        if not key.startswith("pooler."):
            assert torch.equal(back[f"bert.{key}"], value), key
    assert torch.equal(back["cls.predictions.transform.LayerNorm.weight"], torch.ones(32))  # a fresh head
    run_cli("import-hf", str(hf), "-o", str(tmp_path / "fs2"), "--seed", "3")
    a, b = (safe_torch_load(d / "checkpoint.pt", map_location="cpu")["model"]
            for d in (tmp_path / "fs", tmp_path / "fs2"))
    assert torch.equal(a["encoder.lm_head.dense.weight"], b["encoder.lm_head.dense.weight"])  # seeded


def test_pretraining_checkpoint_drops_the_next_sentence_head(tmp_path, bert_dir):
    full = bert(bert_dir, cls=BertForPreTraining)
    hf = save_hf(full, bert_dir, tmp_path / "hf")
    r = import_hf(hf, tmp_path / "fs")
    assert r.fresh_head == [] and "cls.seq_relationship.weight" in r.dropped
    assert any(k.startswith("bert.pooler.") for k in r.dropped)
    export_hf(tmp_path / "fs" / "checkpoint.pt", tmp_path / "back")
    back = load_file(tmp_path / "back" / "model.safetensors")
    for key, value in full.state_dict().items():
        if key in back:
            assert torch.equal(back[key], value), key
    assert "cls.predictions.transform.dense.weight" in back


def test_unsupported_models_and_mismatches_are_one_line_errors(tmp_path, bpe_dir, bert_dir):
    gpt = save_hf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10)), bpe_dir,
                  tmp_path / "gpt")
    proc = run_cli("import-hf", str(gpt), "-o", str(tmp_path / "out"), check=False)
    (line,) = error_lines(proc.stderr)
    assert proc.returncode == 1 and "model_type 'gpt2'" in line and str(gpt) in line
    assert not (tmp_path / "out").exists()
    wrong = save_hf(bert(bert_dir), bpe_dir, tmp_path / "wrong-tok")  # BERT weights, a BPE tokenizer
    proc = run_cli("import-hf", str(wrong), "-o", str(tmp_path / "out"), check=False)
    (line,) = error_lines(proc.stderr)
    assert proc.returncode == 1 and "vocabulary mismatch" in line and str(wrong) in line
    assert not (tmp_path / "out").exists()


def test_conversion_tables_are_inverse_and_complete():
    table = rename_table("bert", 3)
    assert len(set(table.values())) == len(table)  # one to one
    assert table["encoder.sentence_encoder.layers.2.self_attn.out_proj.bias"] == \
        "bert.encoder.layer.2.attention.output.dense.bias"
    assert rename_table("roberta", 1)["encoder.lm_head.layer_norm.weight"] == "lm_head.layer_norm.weight"
    with pytest.raises(ConversionError, match="classification heads are not converted"):
        fairseq_to_hf_state({"classification_heads.mnli.dense.weight": torch.zeros(1)},
                            type("A", (), {"encoder_layers": 1, "untie_weights_roberta": False})(), "roberta", 10, 1)
    with pytest.raises(ConversionError, match="a BART checkpoint exports as bart, not 'bert'"):
        hf_family("bart", None, "bert")
    assert hf_family("roberta", None, None) == "roberta" and hf_family("roberta", None, "bert") == "bert"
    state = RobertaForMaskedLM(RobertaConfig(vocab_size=20, max_position_embeddings=10, type_vocab_size=1,
                                             **SIZE)).state_dict()
    state["roberta.embeddings.token_type_embeddings.weight"] += 1.0
    with pytest.raises(ConversionError, match="token_type_embeddings are not one zero row"):
        hf_to_fairseq_state(state, "roberta", 2, 24, 1, keep_types=False)
