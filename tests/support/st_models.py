"""Tiny sentence-transformers directories of each encoder family, built from configs (tests never download one).

``bert_st_dir``, ``roberta_st_dir`` and ``t5_st_dir`` write what ``SentenceTransformer(DIR)`` loads
offline: the transformers encoder and its tokenizer at the root, then ``Pooling`` (mean / cls / max),
an optional ``Dense`` (no bias, identity activation: the only projection fairseq's pooler has) and an
optional ``Normalize``, saved by sentence-transformers' own classes. ``*_encoder_dir`` write the bare
transformers encoder (no ``modules.json``). Every weight is moved away from its initial value
(norms uniform in 0.5..1.5, biases non-zero), so a mapping mistake changes the embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel, T5Config, T5EncoderModel

from fairseq_ext.convert.sentence_transformers import module_classes
from fairseq_ext.vocab.tokenizer import load_tokenizer, save_tokenizer

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
POSITIONS = 64  # positions a tiny encoder takes (RoBERTa's table has pad + 1 more rows)


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights away from their init: norms uniform in 0.5..1.5, biases and matrices random but small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and p.dim() == 1 and not name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() > 1 else 0.3))
    return model


def _save_encoder(model, tok, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def bert_encoder_dir(out: Path, bert_dir: Path, seed: int = 0, pooler: bool = True, **config) -> Path:
    """A bare ``BertModel`` (with its pooler unless ``pooler`` is False) and the conftest WordPiece tokenizer."""
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    cfg = BertConfig(vocab_size=len(tok), max_position_embeddings=POSITIONS, pad_token_id=0, **{**SIZE, **config})
    return _save_encoder(randomise(BertModel(cfg, add_pooling_layer=pooler), seed), tok, out)


def roberta_encoder_dir(out: Path, bpe_dir: Path, seed: int = 0, types: int = 1, eps: float = 1e-5,
                        zero_types: bool = False, **config) -> Path:
    """A bare ``RobertaModel`` (with its pooler) and the conftest byte-level BPE tokenizer: positions offset by
    pad + 1, ``types`` token types (1 as CodeBERT; 2 with eps 1e-12 as some RoBERTa-layout encoders);
    ``zero_types``: the type row zero, as fairseq's own ``roberta`` model has it (import-hf's MLM import)."""
    tok = AutoTokenizer.from_pretrained(str(bpe_dir))
    cfg = RobertaConfig(vocab_size=len(tok), max_position_embeddings=POSITIONS + tok.pad_token_id + 1,
                        pad_token_id=tok.pad_token_id, bos_token_id=0, eos_token_id=2, type_vocab_size=types,
                        layer_norm_eps=eps, **{**SIZE, **config})
    model = randomise(RobertaModel(cfg), seed)
    if zero_types:
        model.embeddings.token_type_embeddings.weight.data.zero_()
    return _save_encoder(model, tok, out)


def t5_encoder_dir(out: Path, spm_model: Path, seed: int = 0, proj: str = "relu", **config) -> Path:
    """A bare ``T5EncoderModel`` and a T5Tokenizer of the conftest SentencePiece model (adds </s>, no bos)."""
    tok = load_tokenizer(spm_model)
    tok.source_tokenizer_class = "T5Tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out)
    config_file = out / "tokenizer_config.json"  # the tiny vocabulary has no <extra_id_*> sentinels
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "extra_ids": 0}), encoding="utf-8")
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj=proj,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **config)
    randomise(T5EncoderModel(cfg), seed).save_pretrained(out)
    return out


def sentence_transformers_dir(hf_dir: Path, pooling: str = "mean", dense: int = 0, normalize: bool = False,
                              seed: int = 0, similarity: str | None = None, max_seq_length: int = POSITIONS) -> Path:
    """Turn the encoder directory ``hf_dir`` into a sentence-transformers directory (in place): Pooling
    (``pooling``: "mean", "cls" or "max"), Dense to ``dense`` dimensions when non-zero (no bias, identity, random
    weights), Normalize when ``normalize``; ``similarity``: the model's similarity_fn_name (None: its default)."""
    from sentence_transformers import SentenceTransformer

    transformer_cls, pooling_cls, dense_cls, normalize_cls = module_classes()
    transformer = transformer_cls(str(hf_dir), max_seq_length=max_seq_length)
    hidden = transformer.auto_model.config.hidden_size  # T5: d_model
    modules = [transformer, pooling_cls(hidden, pooling_mode=pooling)]
    if dense:
        weight = torch.randn(dense, hidden, generator=torch.Generator().manual_seed(seed + 1)) / hidden ** 0.5
        modules.append(dense_cls(hidden, dense, bias=False, activation_function=torch.nn.Identity(),
                                 init_weight=weight))
    if normalize:
        modules.append(normalize_cls())
    kw = {"similarity_fn_name": similarity} if similarity else {}
    SentenceTransformer(modules=modules, device="cpu", **kw).save(str(hf_dir), create_model_card=False)
    return Path(hf_dir)


def bert_st_dir(out: Path, bert_dir: Path, pooling: str = "mean", dense: int = 0, normalize: bool = False,
                seed: int = 0, similarity: str | None = None, **config) -> Path:
    """A BERT sentence encoder (as all-MiniLM-L6-v2: mean pooling, normalised, when asked so)."""
    return sentence_transformers_dir(bert_encoder_dir(out, bert_dir, seed, **config), pooling, dense, normalize, seed,
                                     similarity)


def roberta_st_dir(out: Path, bpe_dir: Path, pooling: str = "mean", dense: int = 0, normalize: bool = False,
                   seed: int = 0, **config) -> Path:
    """A RoBERTa-layout sentence encoder (CodeBERT-like; ``types``/``eps`` as :func:`roberta_encoder_dir`)."""
    return sentence_transformers_dir(roberta_encoder_dir(out, bpe_dir, seed, **config), pooling, dense, normalize,
                                     seed)


def t5_st_dir(out: Path, spm_model: Path, pooling: str = "mean", dense: int = 16, normalize: bool = True,
              seed: int = 0, **config) -> Path:
    """A T5 sentence encoder; the defaults are sentence-T5's: mean pooling, Dense without bias, Normalize."""
    return sentence_transformers_dir(t5_encoder_dir(out, spm_model, seed, **config), pooling, dense, normalize, seed)
