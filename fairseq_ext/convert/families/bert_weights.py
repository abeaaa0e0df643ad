"""fairseq RoBERTa / ``bert`` encoders <-> Hugging Face ``BertForMaskedLM`` / ``RobertaForMaskedLM``.

Both transformers families have the same weights under different names; the
table below is generated for the number of layers, so every name maps one to
one and a name that is not in it is an error. Beyond renaming there are three
things, each exact:

* vocabulary: fairseq's padding rows (after the last tokenizer id) are cut on
  export and appended on import (the project's invariant keeps every other row);
* positions: fairseq and transformers' RoBERTa put position p at row
  ``p + pad + 1`` (the same table); BERT puts it at row p, so BERT's table is
  fairseq's from row ``pad + 1`` on;
* token types: fairseq's ``roberta`` has none (exported as a zero table); the
  ``hf_bert`` model (:mod:`fairseq_ext.models.bert`) carries the table as is;
* a contrastive ``hf_bert`` (:mod:`fairseq_ext.models.towers`): one tower's weights under the query
  tower's names (:data:`TOWER_PREFIXES`); its pooler (``pooler.*``) and the transformers pooler it carries
  (``hf_pooler.*``, ``--hf-pooler``) are not in ``*ForMaskedLM``: the sentence-transformers format writes
  the bare ``BertModel``/``RobertaModel`` with that pooler (:func:`sentence_encoder`).
"""

from __future__ import annotations

import torch

from fairseq_ext.convert.common import ConversionError, largest_difference, load_hf_state, pad_rows
from fairseq_ext.convert.settings import CheckpointModelSettings

FAMILIES = ("bert", "roberta")
FS = "encoder.sentence_encoder."
# fairseq layer weight -> transformers name inside ``{prefix}.encoder.layer.{i}``
LAYER = [
    ("self_attn.q_proj", "attention.self.query"),
    ("self_attn.k_proj", "attention.self.key"),
    ("self_attn.v_proj", "attention.self.value"),
    ("self_attn.out_proj", "attention.output.dense"),
    ("self_attn_layer_norm", "attention.output.LayerNorm"),
    ("fc1", "intermediate.dense"),
    ("fc2", "output.dense"),
    ("final_layer_norm", "output.LayerNorm"),
]
# the MLM head: fairseq's RobertaLMHead -> each family's names
HEAD = {
    "bert": {"dense": "cls.predictions.transform.dense", "layer_norm": "cls.predictions.transform.LayerNorm",
             "bias": "cls.predictions.bias", "decoder": "cls.predictions.decoder"},
    "roberta": {"dense": "lm_head.dense", "layer_norm": "lm_head.layer_norm", "bias": "lm_head.bias",
                "decoder": "lm_head.decoder"},
}
# a contrastive hf_bert's towers: (encoder, pooler) prefixes; the MLM head's projection is tied to the embeddings
TOWER_PREFIXES = {"query": (FS, "pooler."), "key": ("key_encoder.", "key_pooler.")}
TIED_HEAD = ("encoder.lm_head.weight", f"{FS}embed_tokens.weight")
# fairseq weights *ForMaskedLM has no place for: the pooled embedding's projection, the carried transformers pooler
FAIRSEQ_DROPPED = ("pooler.", "hf_pooler.")
HF_POOLER = {"hf_pooler.weight": "pooler.dense.weight", "hf_pooler.bias": "pooler.dense.bias"}  # fairseq -> bare
# fairseq activation -> transformers hidden_act (same function)
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new", "relu": "relu",
               "tanh": "tanh", "linear": "linear"}


def rename_table(family: str, layers: int) -> dict[str, str]:
    """fairseq name -> transformers name for every weight that is only renamed."""
    p = family
    table = {f"{FS}layernorm_embedding.{w}": f"{p}.embeddings.LayerNorm.{w}" for w in ("weight", "bias")}
    for i in range(layers):
        for fs, hf in LAYER:
            for w in ("weight", "bias"):
                table[f"{FS}layers.{i}.{fs}.{w}"] = f"{p}.encoder.layer.{i}.{hf}.{w}"
    for part in ("dense", "layer_norm"):
        for w in ("weight", "bias"):
            table[f"encoder.lm_head.{part}.{w}"] = f"{HEAD[family][part]}.{w}"
    return table


def embedding_names(family: str) -> dict[str, str]:
    p = family
    return {"tokens": f"{p}.embeddings.word_embeddings.weight",
            "positions": f"{p}.embeddings.position_embeddings.weight",
            "types": f"{p}.embeddings.token_type_embeddings.weight",
            "bias": HEAD[family]["bias"], "decoder_weight": f"{HEAD[family]['decoder']}.weight",
            "decoder_bias": f"{HEAD[family]['decoder']}.bias"}


def check_convertible(args: CheckpointModelSettings) -> None:
    """Settings of a fairseq encoder that transformers' BERT/RoBERTa cannot express."""
    if args.encoder_normalize_before:
        raise ConversionError("encoder_normalize_before=True (pre-norm) has no BERT/RoBERTa equivalent")
    if not args.layernorm_embedding:
        raise ConversionError("layernorm_embedding=False has no BERT/RoBERTa equivalent")
    if not args.no_scale_embedding:
        raise ConversionError("scaled embeddings (no_scale_embedding=False) have no BERT/RoBERTa equivalent")
    if args.no_token_positional_embeddings or not args.encoder_learned_pos:
        raise ConversionError("only learned positional embeddings convert to BERT/RoBERTa")
    if args.activation_fn not in ACTIVATIONS:
        raise ConversionError(f"activation {args.activation_fn!r} has no transformers equivalent")


def hf_config_from_fairseq(args: CheckpointModelSettings, family: str, vocab_size: int, roles, position_rows: int,
                           type_vocab_size: int, layer_norm_eps: float) -> dict:
    """BertConfig / RobertaConfig keyword arguments from a fairseq encoder's settings."""
    check_convertible(args)
    positions = position_rows - roles.pad - 1  # usable positions in fairseq's table
    return dict(
        vocab_size=vocab_size, hidden_size=args.encoder_embed_dim, num_hidden_layers=args.encoder_layers,
        num_attention_heads=args.encoder_attention_heads, intermediate_size=args.encoder_ffn_embed_dim,
        hidden_act=ACTIVATIONS[args.activation_fn], hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.attention_dropout,
        max_position_embeddings=positions if family == "bert" else position_rows,
        type_vocab_size=type_vocab_size, layer_norm_eps=layer_norm_eps,
        pad_token_id=roles.pad, bos_token_id=roles.bos, eos_token_id=roles.eos,
        tie_word_embeddings=not args.untie_weights_roberta,
    )


def fairseq_to_hf_state(state: dict, args: CheckpointModelSettings, family: str, vocab_size: int, pad: int) -> dict:
    """Rename a fairseq encoder's state dict for ``{Bert,Roberta}ForMaskedLM`` (tokenizer-size rows)."""
    if family not in FAMILIES:
        raise ConversionError(f"unknown transformers family {family!r}: choose one of {', '.join(FAMILIES)}")
    table = rename_table(family, args.encoder_layers)
    names = embedding_names(family)
    tied = not args.untie_weights_roberta
    special = _special_weights(names, family, vocab_size, pad, tied)
    out = {}
    for key, tensor in state.items():
        if key in table:
            out[table[key]] = tensor
        elif key in special:
            out.update(special[key](tensor))
        elif key.startswith(FAIRSEQ_DROPPED):
            continue  # the pooled embedding's: written by sentence_encoder for the sentence-transformers format
        elif key.startswith("classification_heads."):
            raise ConversionError(f"{key}: classification heads are not converted; export the pretrained model")
        else:
            raise ConversionError(f"unknown fairseq weight {key!r}: not in the BERT/RoBERTa conversion table")
    emb = out[names["tokens"]]
    if tied:
        out[names["decoder_weight"]] = emb
    if names["types"] not in out:  # fairseq's roberta has no token types: a zero table adds nothing
        out[names["types"]] = emb.new_zeros(2 if family == "bert" else 1, emb.size(1))
    return out


def _special_weights(names: dict, family: str, vocab_size: int, pad: int, tied: bool) -> dict:
    """fairseq weight -> (tensor -> {transformers name: tensor}) for the weights that are more than renamed:
    rows cut to the tokenizer's size, BERT's positions without fairseq's padding offset, the head's shared
    bias, an untied output projection, and fairseq's bookkeeping (dropped)."""
    return {
        f"{FS}embed_tokens.weight": lambda t: {names["tokens"]: t[:vocab_size]},
        f"{FS}embed_positions.weight": lambda t: {names["positions"]: t[pad + 1:] if family == "bert" else t},
        f"{FS}embed_token_types.weight": lambda t: {names["types"]: t},
        "encoder.lm_head.bias": lambda t: dict.fromkeys((names["bias"], names["decoder_bias"]), t[:vocab_size]),
        "encoder.lm_head.weight": lambda t: {} if tied else {names["decoder_weight"]: t[:vocab_size]},
        f"{FS}version": lambda t: {},
    }


def hf_to_fairseq_state(state: dict, family: str, layers: int, vocab_rows: int, pad: int,
                        keep_types: bool, tied: bool = True, seed: int = 0) -> dict:
    """The inverse of :func:`fairseq_to_hf_state`; embeddings and output bias padded to ``vocab_rows`` rows.

    ``keep_types``: the target is the ``hf_bert`` model (carries the token-type table); otherwise the
    table must be a single zero row (fairseq's ``roberta`` has none). ``tied``: the output
    projection is the word embedding table (``tie_word_embeddings``). The padding rows come from ``seed``.
    """
    inverse = {hf: fs for fs, hf in rename_table(family, layers).items()}
    names = embedding_names(family)
    out = {}
    for name, tensor in state.items():
        if name in inverse:
            out[inverse[name]] = tensor
        elif name not in names.values():
            raise ConversionError(f"unknown transformers weight {name!r}: not in the {family} conversion table")
    emb = state[names["tokens"]]
    padded = _pad_rows(emb, vocab_rows, seed)
    out[f"{FS}embed_tokens.weight"] = padded
    positions = state[names["positions"]]
    if family == "bert":  # BERT's position p -> fairseq row p + pad + 1; rows up to pad are never used
        positions = torch.cat([positions.new_zeros(pad + 1, positions.size(1)), positions])
    out[f"{FS}embed_positions.weight"] = positions
    types = state[names["types"]]
    if keep_types:
        out[f"{FS}embed_token_types.weight"] = types
    elif types.size(0) != 1 or types.abs().max() > 0:
        raise ConversionError("token_type_embeddings are not one zero row: only the hf_bert model carries them")
    bias = state[names["bias"]]
    dec_bias = state.get(names["decoder_bias"], bias)
    if not torch.equal(dec_bias, bias):
        if tied:
            raise ConversionError(f"{names['decoder_bias']} differs from {names['bias']} although they are tied")
        bias = dec_bias  # untied (transformers 5): the decoder's bias is the one the forward pass adds
    out["encoder.lm_head.bias"] = _pad_rows(bias, vocab_rows, seed)
    decoder = state.get(names["decoder_weight"], emb)
    if tied:
        if not torch.equal(decoder, emb):
            raise ConversionError(f"{names['decoder_weight']} differs from {names['tokens']} "
                                  "although tie_word_embeddings is set")
        out["encoder.lm_head.weight"] = padded
    else:  # untied output projection (--untie-weights-roberta)
        out["encoder.lm_head.weight"] = _pad_rows(decoder, vocab_rows, seed)
    out[f"{FS}version"] = torch.tensor([3.0])
    return out


def _pad_rows(tensor: torch.Tensor, rows: int, seed: int) -> torch.Tensor:
    """fairseq's vocabulary padding, initialised as fairseq's RoBERTa does (embeddings N(0, 0.02), output bias 0)."""
    return pad_rows(tensor, rows, 0.02, seed)


def hf_classes(family: str):
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    return {"bert": (BertConfig, BertForMaskedLM), "roberta": (RobertaConfig, RobertaForMaskedLM)}[family]


def bare_class(family: str):
    """The transformers encoder without a head (with its pooler): what sentence-transformers loads."""
    from transformers import BertModel, RobertaModel

    return {"bert": BertModel, "roberta": RobertaModel}[family]


def hf_pooler_state(hf_dir, family: str) -> dict:
    """The directory's BertPooler/RobertaPooler dense layer as ``hf_pooler.*`` (empty when it has none)."""
    from fairseq_ext.convert.common import load_weights

    model, info = load_weights(bare_class(family), hf_dir, output_loading_info=True)
    if any(k.startswith("pooler.") for k in info["missing_keys"]):
        return {}
    state = model.state_dict()
    return {fs: state[hf].detach().clone() for fs, hf in HF_POOLER.items()}


def sentence_encoder(hf_model, weights: dict, family: str):
    """The bare encoder of ``hf_model`` (a ``*ForMaskedLM``) with the pooler the checkpoint carries, and a note
    for the card: without ``hf_pooler.*`` the pooler is zeros (sentence-transformers never uses it, and a
    model written without one makes transformers report it missing on every load)."""
    base = hf_model.base_model
    model = bare_class(family)(base.config, add_pooling_layer=True)
    state = {**base.state_dict()}
    note = ""
    for fs, hf in HF_POOLER.items():
        present = weights.get(fs)
        state[hf] = present if present is not None else torch.zeros_like(model.state_dict()[hf])
    if any(weights.get(fs) is None for fs in HF_POOLER):
        note = (f"The checkpoint carries no transformers pooler (`--hf-pooler`): `{type(model).__name__}`'s "
                "`pooler.dense.*` are zeros. The sentence embedding does not use them.")
    return load_hf_state(model, state, "the sentence encoder"), note


def hf_encoder_from_fairseq(args: CheckpointModelSettings, family: str, dictionary, weights: dict, where):
    """A ``{Bert,Roberta}ForMaskedLM`` holding a fairseq encoder's weights."""
    types = weights.get(f"{FS}embed_token_types.weight")
    if types is not None:  # the hf_bert model: its own type table and epsilon
        type_vocab, eps = types.size(0), float(args.layer_norm_eps)
    else:  # fairseq's roberta: no token types, epsilon 1e-5
        type_vocab, eps = (2 if family == "bert" else 1), 1e-5
    rows = weights[f"{FS}embed_positions.weight"].size(0)
    config_cls, model_cls = hf_classes(family)
    roles = dictionary.roles
    config = config_cls(**hf_config_from_fairseq(args, family, dictionary.tokenizer_size, roles, rows, type_vocab,
                                                  eps))
    return load_hf_state(model_cls(config), fairseq_to_hf_state(weights, args, family, dictionary.tokenizer_size,
                                                                 roles.pad), where)


def encoder_parity(fs_model, hf_model, dictionary, max_positions: int) -> float:
    """Largest |MLM logit difference| between the two models over real (non-pad) positions."""
    vocab = dictionary.tokenizer_size

    def outputs(src, _prev):
        keep = src.ne(dictionary.pad())  # (B, T)
        return fs_model(src)[0][..., :vocab], hf_model(input_ids=src, attention_mask=keep.long()).logits, keep

    return largest_difference(dictionary, min(48, max_positions), outputs)
