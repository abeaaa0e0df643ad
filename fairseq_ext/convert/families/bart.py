"""fairseq BART <-> Hugging Face ``BartForConditionalGeneration``.

Conversion is a renaming table (``RENAMES``) plus a list of what is dropped on
purpose (``DROPPED``); a key that matches neither is an error. Embedding rows
are the tokenizer's ids on both sides (the project's invariant), so the only
reshaping is cutting fairseq's vocabulary padding and lining up the learned
position tables (fairseq starts positions at ``pad + 1``, transformers at 2).
"""

from __future__ import annotations

import re
import warnings
from argparse import Namespace

import torch

from fairseq_ext.convert.common import (
    ConversionError,
    check_loaded,
    largest_difference,
    load_hf_state,
    load_weights,
    pad_rows,
    task_summary,
)
from fairseq_ext.convert.family import CardLines, FairseqSide, Family, LoadedHF
from fairseq_ext.convert.settings import CheckpointModelSettings

# fairseq name pattern -> transformers name
RENAMES = [
    (r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$", r"model.\1.layers.\2.\3"),
    (r"^(encoder|decoder)\.layernorm_embedding\.(weight|bias)$", r"model.\1.layernorm_embedding.\2"),
    (r"^(encoder|decoder)\.embed_positions\.weight$", r"model.\1.embed_positions.weight"),
    (r"^encoder\.embed_tokens\.weight$", "model.shared.weight"),
]
# fairseq keys with no transformers counterpart, and why
DROPPED = [
    (r"^(encoder|decoder)\.version$", "fairseq bookkeeping"),
    (r"^decoder\.embed_tokens\.weight$", "tied to encoder.embed_tokens (share_all_embeddings)"),
    (r"^decoder\.output_projection\.weight$", "tied to the embeddings (lm_head)"),
]


def hf_config_from_fairseq(args: CheckpointModelSettings, vocab_size: int, roles) -> dict:
    """BartConfig keyword arguments from a fairseq BART model's settings."""
    for flag, value in (("encoder_normalize_before", args.encoder_normalize_before),
                        ("decoder_normalize_before", args.decoder_normalize_before)):
        if value:
            raise ConversionError(f"{flag}=True (pre-norm) has no BartForConditionalGeneration equivalent")
    if not args.layernorm_embedding:
        raise ConversionError("layernorm_embedding=False has no BartForConditionalGeneration equivalent")
    if not args.share_all_embeddings:
        raise ConversionError("only checkpoints trained with --share-all-embeddings convert (as every BART does)")
    if args.max_source_positions != args.max_target_positions:
        raise ConversionError("max_source_positions != max_target_positions; transformers' BART has one size")
    return dict(
        vocab_size=vocab_size, d_model=args.encoder_embed_dim,
        encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers,
        encoder_attention_heads=args.encoder_attention_heads, decoder_attention_heads=args.decoder_attention_heads,
        encoder_ffn_dim=args.encoder_ffn_embed_dim, decoder_ffn_dim=args.decoder_ffn_embed_dim,
        max_position_embeddings=args.max_source_positions, activation_function=args.activation_fn,
        dropout=args.dropout, attention_dropout=args.attention_dropout,
        activation_dropout=args.activation_dropout, scale_embedding=not args.no_scale_embedding,
        pad_token_id=roles.pad, bos_token_id=roles.bos, eos_token_id=roles.eos,
        decoder_start_token_id=roles.eos, tie_word_embeddings=True,
    )


def _rename(key: str) -> str | None:
    for pattern, _why in DROPPED:
        if re.match(pattern, key):
            return None
    for pattern, repl in RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise ConversionError(f"unknown fairseq weight {key!r}: not in the BART conversion table")


def positions_to_hf(weight: torch.Tensor, pad: int, max_positions: int) -> torch.Tensor:
    """fairseq's learned positions (position p at row p + pad + 1) -> transformers' (row p + 2)."""
    out = weight.new_zeros(max_positions + 2, weight.size(1))
    out[2:] = weight[pad + 1: pad + 1 + max_positions]
    lead = weight[max(pad - 1, 0): pad + 1]  # the unused leading rows, kept where they exist
    out[2 - lead.size(0): 2] = lead
    return out


def positions_to_fairseq(weight: torch.Tensor, pad: int, max_positions: int) -> torch.Tensor:
    out = weight.new_zeros(max_positions + pad + 1, weight.size(1))
    out[pad + 1:] = weight[2: 2 + max_positions]
    lead = weight[2 - min(pad + 1, 2): 2]
    out[pad + 1 - lead.size(0): pad + 1] = lead
    return out


def fairseq_to_hf_state(state: dict, args: CheckpointModelSettings, vocab_size: int, pad: int) -> dict:
    """Rename a fairseq BART state dict for ``BartForConditionalGeneration`` (tokenizer-size rows)."""
    out = {}
    for key, tensor in state.items():
        name = _rename(key)
        if name is None:
            continue
        if name.endswith("embed_positions.weight"):
            tensor = positions_to_hf(tensor, pad, args.max_source_positions)
        if name == "model.shared.weight":
            tensor = tensor[:vocab_size]
        out[name] = tensor
    shared = out["model.shared.weight"]
    out["model.encoder.embed_tokens.weight"] = shared
    out["model.decoder.embed_tokens.weight"] = shared
    out["lm_head.weight"] = shared
    out["final_logits_bias"] = torch.zeros(1, vocab_size, dtype=shared.dtype)
    return out


def hf_to_fairseq_state(state: dict, vocab_rows: int, pad: int, max_positions: int, seed: int = 0) -> dict:
    """The inverse of :func:`fairseq_to_hf_state`; embeddings padded to ``vocab_rows`` rows (from ``seed``)."""
    shared = state["model.shared.weight"]
    tied = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
    for name in tied:
        if name in state and not torch.equal(state[name], shared):
            raise ConversionError(f"{name} differs from model.shared.weight: only tied embeddings convert")
    out = {}
    skipped = {*tied, "final_logits_bias"}
    for name, tensor in state.items():
        if name in skipped:
            continue
        key = _hf_name_to_fairseq(name)
        if key.endswith("embed_positions.weight"):
            tensor = positions_to_fairseq(tensor, pad, max_positions)
        out[key] = tensor
    bias = state.get("final_logits_bias")
    if bias is not None and bias.abs().max() > 0:
        raise ConversionError("final_logits_bias is not zero: fairseq's BART has no output bias")
    emb = out.pop("encoder.embed_tokens.weight")
    emb = pad_rows(emb, vocab_rows, emb.size(1) ** -0.5, seed)  # as fairseq's BART initialises embeddings
    out["encoder.embed_tokens.weight"] = emb
    out["decoder.embed_tokens.weight"] = emb
    out["decoder.output_projection.weight"] = emb
    for side in ("encoder", "decoder"):
        out[f"{side}.version"] = torch.tensor([3.0])
    return out


def _hf_name_to_fairseq(name: str) -> str:
    if name == "model.shared.weight":
        return "encoder.embed_tokens.weight"
    found = re.match(r"^model\.(encoder|decoder)\.(layers\.\d+\..+|layernorm_embedding\.(?:weight|bias)|"
                     r"embed_positions\.weight)$", name)
    if not found:
        raise ConversionError(f"unknown transformers weight {name!r}: not in the BART conversion table")
    return f"{found.group(1)}.{found.group(2)}"


def hf_bart_from_fairseq(args: CheckpointModelSettings, dictionary, weights, where):
    from transformers import BartConfig, BartForConditionalGeneration

    roles = dictionary.roles
    config = BartConfig(**hf_config_from_fairseq(args, dictionary.tokenizer_size, roles))
    hf = BartForConditionalGeneration(config)
    gen = hf.generation_config  # as the released BART checkpoints generate
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = roles.bos, roles.eos, roles.pad
    gen.decoder_start_token_id, gen.forced_bos_token_id, gen.forced_eos_token_id = roles.eos, roles.bos, roles.eos
    return load_hf_state(hf, fairseq_to_hf_state(weights, args, dictionary.tokenizer_size, roles.pad), where)


def bart_parity(fs_model, hf_model, dictionary, max_positions: int) -> float:
    """Largest |logit difference| between the two models over real (non-pad) decoder positions."""
    vocab, pad = dictionary.tokenizer_size, dictionary.pad()

    def outputs(src, prev):
        with warnings.catch_warnings():  # fairseq mixes mask dtypes; torch warns, results are exact
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            fs_logits = fs_model(src, src.ne(pad).sum(1), prev)[0][..., :vocab]  # (B, T, V)
        hf_logits = hf_model(input_ids=src, attention_mask=src.ne(pad).long(), decoder_input_ids=prev,
                             decoder_attention_mask=prev.ne(pad).long()).logits
        return fs_logits, hf_logits, prev.ne(pad)

    return largest_difference(dictionary, min(48, max_positions), outputs)


def bart_flags(config) -> list[str]:
    """fairseq-train model flags for a BART architecture equal to an HF BartConfig."""
    if getattr(config, "normalize_before", False) or getattr(config, "add_final_layer_norm", False):
        raise ConversionError("pre-norm BART variants (mBART) are not supported")
    if config.scale_embedding:  # fairseq's bart architectures never scale; no flag turns it on
        raise ConversionError("scale_embedding=True: fairseq-train's BART cannot scale embeddings")
    return [
        "--arch", "bart_base",
        "--encoder-layers", str(config.encoder_layers), "--decoder-layers", str(config.decoder_layers),
        "--encoder-embed-dim", str(config.d_model), "--decoder-embed-dim", str(config.d_model),
        "--encoder-ffn-embed-dim", str(config.encoder_ffn_dim), "--decoder-ffn-embed-dim", str(config.decoder_ffn_dim),
        "--encoder-attention-heads", str(config.encoder_attention_heads),
        "--decoder-attention-heads", str(config.decoder_attention_heads),
        "--max-source-positions", str(config.max_position_embeddings),
        "--max-target-positions", str(config.max_position_embeddings),
        "--activation-fn", config.activation_function, "--dropout", str(config.dropout),
        "--attention-dropout", str(config.attention_dropout), "--activation-dropout", str(config.activation_dropout),
        "--share-all-embeddings",
    ]


def fill_settings(values: dict, model: str, task: dict) -> Namespace:
    """A BART's settings completed as ``BARTModel.build_model`` completes them (then TransformerModel's)."""
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from fairseq.models.transformer.transformer_legacy import base_architecture

    args = Namespace(**values)
    ARCH_CONFIG_REGISTRY[args.arch](args)
    base_architecture(args)
    return args


def load_hf(hf_dir, config, seed: int) -> LoadedHF:
    from transformers import BartForConditionalGeneration

    bart_flags(config)  # an unconvertible config is reported before the weights are read
    model, info = load_weights(BartForConditionalGeneration, hf_dir, output_loading_info=True)
    check_loaded(hf_dir, model, info, may_lack=("final_logits_bias",))  # zero: fairseq's BART has no output bias
    return LoadedHF(model.eval(), seed=seed)


def to_fairseq(loaded: LoadedHF, config, dictionary) -> FairseqSide:
    positions = config.max_position_embeddings
    weights = hf_to_fairseq_state(loaded.model.state_dict(), len(dictionary), dictionary.pad(), positions,
                                  loaded.seed)
    return FairseqSide(bart_flags(config), weights, positions, f"{config.encoder_layers}+{config.decoder_layers}",
                       config.d_model)


BART_KEYS = ("mask", "mask_length", "poisson_lambda", "permute_sentences", "mask_random", "rotate", "insert")


def card(args: CheckpointModelSettings, task: dict) -> CardLines:
    task_name = task.get("_name") or task.get("task")
    return CardLines(
        f"{args.encoder_layers}+{args.decoder_layers} layers, d_model {args.encoder_embed_dim}, "
        f"{args.encoder_attention_heads} heads, FFN {args.encoder_ffn_embed_dim}",
        f"{task_name or 'denoising'} (BART text infilling{task_summary(task, BART_KEYS)})",
    )


FAMILY = Family(
    name="bart", title="BART", hf_class="BartForConditionalGeneration", model_types=("bart",),
    fairseq_models=("bart",), default_for=("bart",), checkpoints="BART (bart_*)",
    checkpoint_kind="a BART checkpoint",
    train_flags=("--task", "hf_denoising", "--criterion", "cross_entropy_with_accuracy"),
    embed_key="encoder.embed_tokens.weight", pipeline_tag="fill-mask", input_names=("input_ids", "attention_mask"),
    fill_settings=fill_settings, positions_setting="max_source_positions", load_hf=load_hf, to_fairseq=to_fairseq,
    to_hf=hf_bart_from_fairseq, parity=bart_parity, card=card,
)
