"""fairseq ``t5_encoder`` <-> Hugging Face ``T5EncoderModel`` (or the encoder of ``T5ForConditionalGeneration``).

Pure functions over state dicts and configs; the model's own layout is in
:mod:`fairseq_ext.models.t5.model`. Every weight is renamed one to one by the
table of :func:`rename_table`; beyond renaming:

* vocabulary: fairseq's padding rows (after the last tokenizer id) are cut on export and
  appended on import (drawn from N(0, 1) like T5's embeddings, from the import's seed);
* dropped on import (:data:`HF_DROPPED`): ``T5ForConditionalGeneration``'s decoder and ``lm_head``;
* dropped on export (:data:`FAIRSEQ_DROPPED`): the fairseq MLM head and the pooler, which
  ``T5EncoderModel`` has no place for;
* towers (``--separate-towers``): :data:`TOWER_PREFIXES`, by which
  :func:`fairseq_ext.convert.common.tower_weights` gives one tower's weights under the query tower's
  names (``key_encoder.`` -> ``encoder.``, ``key_pooler.`` -> ``pooler.``), the other dropped;
* made fresh on import (:func:`fresh_head`): the MLM head, which transformers' T5 encoder lacks.

Any other name is an error, so nothing is lost or invented silently.
"""

from __future__ import annotations

import torch

from fairseq_ext.convert.common import ConversionError, largest_difference, pad_rows
from fairseq_ext.models.t5.model import resolved_settings
from fairseq_ext.models.t5.modules import FEED_FORWARD_PROJ

HF_DROPPED = ("decoder.", "lm_head.")  # T5ForConditionalGeneration's decoder and its output projection
FAIRSEQ_DROPPED = ("lm_head.", "pooler.")  # the MLM head and the pooled-embedding projection
HF_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight")  # one tensor, tied in transformers
FS_EMBEDDINGS = "encoder.embed_tokens.weight"
# a tower's prefixes: (encoder, pooler); the key tower's exist only with --separate-towers
TOWER_PREFIXES = {"query": ("encoder.", "pooler."), "key": ("key_encoder.", "key_pooler.")}
MODEL_TYPES = ("t5", "mt5")  # same encoder layout (umt5's per-layer position tables are not)
# fairseq name inside ``encoder.layers.{i}.`` -> transformers name inside ``encoder.block.{i}.``
LAYER = [
    ("self_attn_layer_norm.weight", "layer.0.layer_norm.weight"),
    ("self_attn.q_proj.weight", "layer.0.SelfAttention.q.weight"),
    ("self_attn.k_proj.weight", "layer.0.SelfAttention.k.weight"),
    ("self_attn.v_proj.weight", "layer.0.SelfAttention.v.weight"),
    ("self_attn.out_proj.weight", "layer.0.SelfAttention.o.weight"),
    ("ffn_layer_norm.weight", "layer.1.layer_norm.weight"),
    ("ffn.wo.weight", "layer.1.DenseReluDense.wo.weight"),
]
FFN_IN = {"relu": ["wi"], "gated-gelu": ["wi_0", "wi_1"]}
BIAS_TABLE = ("encoder.layers.0.self_attn.relative_attention_bias.weight",
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")


def rename_table(layers: int, feed_forward_proj: str) -> dict[str, str]:
    """fairseq name -> transformers name for every weight that is only renamed (all but the embeddings)."""
    table = dict([BIAS_TABLE, ("encoder.layer_norm.weight", "encoder.final_layer_norm.weight")])
    ffn_in = [(f"ffn.{w}.weight", f"layer.1.DenseReluDense.{w}.weight") for w in FFN_IN[feed_forward_proj]]
    for i in range(layers):
        for fs, hf in LAYER + ffn_in:
            table[f"encoder.layers.{i}.{fs}"] = f"encoder.block.{i}.{hf}"
    return table


def check_hf_config(hf_config) -> str:
    """The ``feed_forward_proj`` of a transformers T5 config this module converts; else a ConversionError."""
    if getattr(hf_config, "model_type", "t5") not in MODEL_TYPES:
        raise ConversionError(f"model_type {hf_config.model_type!r}: only {'/'.join(MODEL_TYPES)} encoders convert "
                              "to t5_encoder")
    if getattr(hf_config, "is_decoder", False):
        raise ConversionError("is_decoder=True: a T5 decoder stack does not convert to the t5_encoder model")
    proj = hf_config.feed_forward_proj
    if proj not in FEED_FORWARD_PROJ:
        raise ConversionError(f"feed_forward_proj={proj!r}: t5_encoder supports {' and '.join(FEED_FORWARD_PROJ)}")
    return proj


def t5_flags(hf_config) -> list[str]:
    """fairseq-train model flags that build a ``t5_encoder`` equal to a transformers ``T5Config``'s encoder."""
    proj = check_hf_config(hf_config)
    return [
        "--arch", "t5_encoder",
        "--encoder-embed-dim", str(hf_config.d_model), "--encoder-layers", str(hf_config.num_layers),
        "--encoder-attention-heads", str(hf_config.num_heads), "--kv-dim", str(hf_config.d_kv),
        "--encoder-ffn-embed-dim", str(hf_config.d_ff), "--feed-forward-proj", proj,
        "--relative-attention-num-buckets", str(hf_config.relative_attention_num_buckets),
        "--relative-attention-max-distance", str(hf_config.relative_attention_max_distance),
        "--layer-norm-eps", str(hf_config.layer_norm_epsilon), "--dropout", str(hf_config.dropout_rate),
    ]


def hf_dropped(hf_state: dict) -> list[str]:
    """The transformers weights :func:`hf_to_fairseq_state` deliberately leaves out (decoder, lm_head)."""
    return sorted(k for k in hf_state if k.startswith(HF_DROPPED))


def fairseq_dropped(weights: dict) -> list[str]:
    """The fairseq weights :func:`fairseq_to_hf_state` deliberately leaves out (MLM head, pooler)."""
    return sorted(k for k in weights if k.startswith(FAIRSEQ_DROPPED))


def hf_embeddings(hf_state: dict) -> torch.Tensor:
    """The token embeddings (``shared.weight``; ``encoder.embed_tokens.weight`` must be the same)."""
    present = [hf_state[k] for k in HF_EMBEDDINGS if k in hf_state]
    if not present:
        raise ConversionError(f"no token embeddings: neither {' nor '.join(HF_EMBEDDINGS)} is in the checkpoint")
    if len(present) == 2 and not torch.equal(*present):
        raise ConversionError(f"{HF_EMBEDDINGS[0]} and {HF_EMBEDDINGS[1]} differ although T5 ties them")
    return present[0]


def fresh_head(embeddings: torch.Tensor, seed: int = 0) -> dict:
    """A new MLM head over ``embeddings`` (V, C) as the fairseq model initialises one (fixed seed)."""
    rows, d = embeddings.shape
    g = torch.Generator().manual_seed(seed)
    dense = (torch.randn(d, d, generator=g) * d ** -0.5).to(embeddings.dtype)
    return {"lm_head.dense.weight": dense, "lm_head.dense.bias": embeddings.new_zeros(d),
            "lm_head.layer_norm.weight": embeddings.new_ones(d), "lm_head.bias": embeddings.new_zeros(rows),
            "lm_head.weight": embeddings}


def hf_to_fairseq_state(hf_state: dict, hf_config, n_rows: int, pad: int, seed: int = 0) -> dict:
    """transformers T5 encoder weights -> a ``t5_encoder`` state dict with ``n_rows`` vocabulary rows.

    ``pad``: the dictionary's pad id, which must be the config's ``pad_token_id``. The MLM head
    is fresh (:func:`fresh_head`) and the padding rows too, both from ``seed``; the pooler is absent
    (``t5_flags`` asks for none).
    """
    proj = check_hf_config(hf_config)
    if hf_config.pad_token_id is not None and hf_config.pad_token_id != pad:
        raise ConversionError(f"pad_token_id {hf_config.pad_token_id} in the T5 config, but the dictionary's pad "
                              f"is {pad}")
    inverse = {hf: fs for fs, hf in rename_table(hf_config.num_layers, proj).items()}
    out = {}
    for name, tensor in hf_state.items():
        if name in inverse:
            out[inverse[name]] = tensor
        elif name not in HF_EMBEDDINGS and not name.startswith(HF_DROPPED):
            raise ConversionError(f"unknown transformers weight {name!r}: not in the T5 encoder conversion table")
    missing = sorted(set(inverse) - set(hf_state))
    if missing:
        raise ConversionError(f"the T5 checkpoint lacks {missing[0]} (and {len(missing) - 1} more) for "
                              f"{hf_config.num_layers} layers with feed_forward_proj={proj}")
    emb = hf_embeddings(hf_state)
    if n_rows < emb.size(0):
        raise ConversionError(f"the dictionary has {n_rows} rows, fewer than the checkpoint's {emb.size(0)} "
                              "embedding rows")
    padded = pad_rows(emb, n_rows, 1.0, seed)  # T5's N(0, 1)
    out[FS_EMBEDDINGS] = padded
    out.update(fresh_head(padded, seed))
    return out


def fairseq_to_hf_state(weights: dict, cfg, vocab_size: int) -> dict:
    """A ``t5_encoder`` state dict -> ``T5EncoderModel`` weights with the tokenizer's ``vocab_size`` rows.

    ``cfg``: the model's settings (a :class:`~fairseq_ext.models.t5.model.T5EncoderConfig`, a
    checkpoint's ``cfg.model`` or the parsed flags).
    """
    args = resolved_settings(cfg)
    table = rename_table(args.encoder_layers, args.feed_forward_proj)
    out = {}
    for key, tensor in weights.items():
        if key in table:
            out[table[key]] = tensor
        elif key == FS_EMBEDDINGS:
            if tensor.size(0) < vocab_size:
                raise ConversionError(f"{key} has {tensor.size(0)} rows, fewer than the tokenizer's {vocab_size}")
            for name in HF_EMBEDDINGS:
                out[name] = tensor[:vocab_size]
        elif not key.startswith(FAIRSEQ_DROPPED):
            raise ConversionError(f"unknown fairseq weight {key!r}: not in the T5 encoder conversion table")
    missing = sorted(set(table) - set(weights)) + ([] if FS_EMBEDDINGS in weights else [FS_EMBEDDINGS])
    if missing:
        raise ConversionError(f"the fairseq checkpoint lacks {missing[0]} (and {len(missing) - 1} more) for "
                              f"{args.encoder_layers} layers with feed_forward_proj={args.feed_forward_proj}")
    return out


def hf_t5_config(cfg, vocab_size: int, pad_id: int, eos_id: int | None):
    """The transformers ``T5Config`` of a ``t5_encoder`` model (for ``T5EncoderModel``)."""
    from transformers import T5Config

    args = resolved_settings(cfg)
    return T5Config(
        vocab_size=vocab_size, d_model=args.encoder_embed_dim, d_kv=args.kv_dim, d_ff=args.encoder_ffn_embed_dim,
        num_layers=args.encoder_layers, num_heads=args.encoder_attention_heads,
        relative_attention_num_buckets=args.relative_attention_num_buckets,
        relative_attention_max_distance=args.relative_attention_max_distance, dropout_rate=args.dropout,
        layer_norm_epsilon=args.layer_norm_eps, feed_forward_proj=args.feed_forward_proj,
        is_encoder_decoder=False, use_cache=False, pad_token_id=pad_id, eos_token_id=eos_id,
        decoder_start_token_id=pad_id, architectures=["T5EncoderModel"],
    )


def t5_parity(fs_model, hf_model, dictionary) -> float:
    """Largest |final hidden state difference| between the two models (both in eval mode) over the
    real (non-pad) positions of padded batches; works for tokenizers without bos."""

    def outputs(src, _prev):
        keep = src.ne(dictionary.pad())  # (B, T)
        fs_hidden = fs_model(src, features_only=True)[0]  # (B, T, C)
        return fs_hidden, hf_model(input_ids=src, attention_mask=keep.long()).last_hidden_state, keep

    return largest_difference(dictionary, min(48, fs_model.max_positions()), outputs)
