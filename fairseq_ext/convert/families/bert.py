"""The BERT and RoBERTa families: fairseq's ``roberta`` and our ``hf_bert`` encoders <-> ``{Bert,Roberta}ForMaskedLM``.

Both families share their fairseq models and their weight table
(:mod:`fairseq_ext.convert.families.bert_weights`); a checkpoint exports to the family it
came from unless ``--family`` picks the other. Importing, a RoBERTa becomes
fairseq's ``roberta`` when it has what fairseq's RoBERTa has (one zero
token-type row, layer-norm epsilon 1e-5, as the released RoBERTa checkpoints);
BERT, and any RoBERTa with more, becomes the ``hf_bert`` model
(:mod:`fairseq_ext.models.bert`), which carries the token-type table and the
epsilon exactly.

For contrastive training (import-hf of a sentence-transformers directory, or ``--pooling``) both
families become ``hf_bert`` (fairseq's ``roberta`` model has no towers), with the directory's
BertPooler/RobertaPooler carried as ``hf_pooler`` (``--hf-pooler``) so that the sentence-transformers
export writes it back bit-identical; ``towers`` and ``pooled`` give that export one tower's pooled
embedding.
"""

from __future__ import annotations

from argparse import Namespace

import torch

from fairseq_ext.convert.common import ConversionError, check_loaded, load_weights, objective_line
from fairseq_ext.convert.families import bert_weights as encoder
from fairseq_ext.convert.family import CardLines, FairseqSide, Family, LoadedHF, one_tower, pooled_embedding

# transformers hidden_act -> fairseq activation (same function)
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate", "relu": "relu",
               "tanh": "tanh", "linear": "linear"}
MLM_KEYS = ("mask_prob", "leave_unmasked_prob", "random_token_prob", "mask_unit", "short_seq_prob",
            "sample_break_mode", "tokens_per_sample")
HEAD_PREFIX = {"bert": "cls.", "roberta": "lm_head."}


def encoder_flags(config, family: str, positions: int, keep_types: bool) -> list[str]:
    """fairseq-train model flags for a ``roberta`` or ``bert`` model equal to an HF Bert/RobertaConfig."""
    act = ACTIVATIONS.get(config.hidden_act)
    if act is None:
        raise ConversionError(f"hidden_act {config.hidden_act!r} has no fairseq equivalent")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"position_embedding_type {config.position_embedding_type!r}: "
                              "only absolute positions convert")
    flags = [
        "--arch", "hf_bert" if keep_types else "roberta",
        "--encoder-layers", str(config.num_hidden_layers), "--encoder-embed-dim", str(config.hidden_size),
        "--encoder-ffn-embed-dim", str(config.intermediate_size),
        "--encoder-attention-heads", str(config.num_attention_heads), "--max-positions", str(positions),
        "--activation-fn", act, "--dropout", str(config.hidden_dropout_prob),
        "--attention-dropout", str(config.attention_probs_dropout_prob), "--activation-dropout", "0.0",
    ]
    if keep_types:
        flags += ["--type-vocab-size", str(config.type_vocab_size), "--layer-norm-eps", repr(config.layer_norm_eps),
                  "--hf-model-type", family]
    if not config.tie_word_embeddings:
        flags.append("--untie-weights-roberta")
    return flags


def fill_settings(values: dict, model: str, task: dict) -> Namespace:
    """An encoder's settings completed as fairseq completes them when it builds the model."""
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from fairseq.models.roberta.model import base_architecture

    if "max_positions" not in values:  # fairseq's RoBERTa: the task's sample length
        tokens = task.get("tokens_per_sample") or values.get("tokens_per_sample")
        if tokens is not None:
            values = dict(values, max_positions=tokens)
    args = Namespace(**values)
    if model == "hf_bert":  # hf_bert's presets and config defaults, then RobertaEncoder's
        from fairseq_ext.models.bert import resolved_args

        args = resolved_args(args)
    else:
        ARCH_CONFIG_REGISTRY[args.arch](args)
    base_architecture(args)
    return args


def load_hf(hf_dir, config, seed: int) -> LoadedHF:
    """``{Bert,Roberta}ForMaskedLM`` from the directory; a missing MLM head is initialised from ``seed``, and
    what the masked-LM model does not use (a pooler, a next-sentence or classifier head) is dropped, both
    reported."""
    _config_cls, model_cls = encoder.hf_classes(config.model_type)
    torch.manual_seed(seed)
    model, info = load_weights(model_cls, hf_dir, output_loading_info=True)
    head = sorted(k for k in info["missing_keys"] if k.startswith(HEAD_PREFIX[config.model_type]))
    dropped = check_loaded(hf_dir, model, info, may_lack=head, may_drop=("",))
    return LoadedHF(model.eval(), head, dropped, seed=seed)


def to_fairseq(loaded: LoadedHF, config, dictionary, keep_types: bool | None = None) -> FairseqSide:
    """Flags and weights of fairseq's ``roberta`` (a RoBERTa with no more than it has) or ``hf_bert``
    (``keep_types`` True: always ``hf_bert``)."""
    family = config.model_type
    state = loaded.model.state_dict()
    names = encoder.embedding_names(family)
    types = state[names["types"]]
    if keep_types is None:
        keep_types = family == "bert" or not (
            types.size(0) == 1 and not types.abs().max() > 0 and config.layer_norm_eps == 1e-5)
    # BERT's table holds its positions; RoBERTa's also the pad + 1 unused rows before them
    positions = config.max_position_embeddings - (0 if family == "bert" else dictionary.pad() + 1)
    flags = encoder_flags(config, family, positions, keep_types)
    weights = encoder.hf_to_fairseq_state(state, family, config.num_hidden_layers, len(dictionary),
                                          dictionary.pad(), keep_types, tied=config.tie_word_embeddings,
                                          seed=loaded.seed)
    dropped = []
    if not torch.equal(state[names["bias"]], state[names["decoder_bias"]]):
        dropped.append(f"{names['bias']} (unused beside the untied {names['decoder_bias']}; exported equal to it)")
    return FairseqSide(flags, weights, positions, str(config.num_hidden_layers), config.hidden_size, dropped)


def contrastive(loaded: LoadedHF, config, dictionary, hf_dir) -> FairseqSide:
    """The encoder as a contrastive ``hf_bert`` (either family), carrying the directory's pooler (``--hf-pooler``)
    when it has one: the masked-LM import leaves it out, this one keeps it for the export back."""
    fs = to_fairseq(loaded, config, dictionary, keep_types=True)
    pooler = encoder.hf_pooler_state(hf_dir, config.model_type)
    if pooler:
        fs.flags.append("--hf-pooler")
        fs.weights.update(pooler)
        loaded.dropped = [n for n in loaded.dropped if ".pooler." not in f".{n}"]  # carried, not dropped
    return fs


def towers(args, weights: dict, tower: str):
    """One tower of a contrastive ``hf_bert`` as a one-tower model (see :func:`one_tower`)."""
    return one_tower(args, weights, tower, encoder.TOWER_PREFIXES, encoder.TIED_HEAD)


def card(args, task: dict) -> CardLines:
    return CardLines(
        f"{args.encoder_layers} layers, d_model {args.encoder_embed_dim}, {args.encoder_attention_heads} heads, "
        f"FFN {args.encoder_ffn_embed_dim}",
        objective_line(task, MLM_KEYS),
    )


def _family(name: str, title: str, hf_class: str, default_for: tuple[str, ...], checkpoints: str,
            input_names) -> Family:
    return Family(
        name=name, title=title, hf_class=hf_class, model_types=(name,), fairseq_models=("roberta", "hf_bert"),
        default_for=default_for, checkpoints=checkpoints, checkpoint_kind="an encoder checkpoint",
        train_flags=("--task", "hf_masked_lm", "--criterion", "masked_lm_with_accuracy"),
        embed_key=f"{encoder.FS}embed_tokens.weight", pipeline_tag="fill-mask", input_names=input_names,
        fill_settings=fill_settings, positions_setting="max_positions", load_hf=load_hf, to_fairseq=to_fairseq,
        to_hf=lambda args, dictionary, weights, where: encoder.hf_encoder_from_fairseq(args, name, dictionary,
                                                                                      weights, where),
        parity=encoder.encoder_parity, card=card, towers=towers, pooled=pooled_embedding, contrastive=contrastive,
        sentence_encoder=lambda hf_model, weights: encoder.sentence_encoder(hf_model, weights, name),
    )


# fairseq's roberta exports as RoBERTa, hf_bert as the family it records (--hf-model-type), else BERT
ROBERTA = _family("roberta", "RoBERTa", "RobertaForMaskedLM", ("roberta",), "RoBERTa (roberta_*)",
                  ("input_ids", "attention_mask"))  # RoBERTa takes no token_type_ids by default
BERT = _family("bert", "BERT", "BertForMaskedLM", ("hf_bert",), "BERT (hf_bert*)", None)
