"""The T5 family: fairseq's ``t5_encoder`` <-> transformers' ``T5EncoderModel``, registered in the families table.

The weight tables and parity are :mod:`fairseq_ext.convert.families.t5_weights`'s; this module
adds what import-hf and export-hf need around them. Import takes a
``T5EncoderModel`` directory, or a ``T5ForConditionalGeneration`` one whose
encoder it keeps (the decoder and ``lm_head`` are dropped and reported); the
fairseq model's MLM head is new (transformers' T5 encoder has none), seeded by
``--seed``. Export writes ``T5EncoderModel``: the MLM head and the pooler stay
behind, and the card says so.
"""

from __future__ import annotations

from argparse import Namespace

from fairseq_ext.convert.common import (
    PAIR_KEYS,
    ConversionError,
    check_loaded,
    load_hf_state,
    load_weights,
    objective_line,
)
from fairseq_ext.convert.families import t5_weights as t5
from fairseq_ext.convert.family import CardLines, FairseqSide, Family, LoadedHF, one_tower, pooled_embedding
from fairseq_ext.models.t5.model import DEFAULT_MAX_POSITIONS, resolved_settings

MLM_KEYS = ("mask_prob", "leave_unmasked_prob", "random_token_prob", "mask_unit", "sample_break_mode",
            "tokens_per_sample")
WHOLE_MODEL = "T5ForConditionalGeneration"


def fill_settings(values: dict, model: str, task: dict) -> Namespace:
    """A ``t5_encoder``'s settings completed as its builder completes them (max_positions: the task's length,
    the longer side of a contrastive task's pairs)."""
    length = task.get("tokens_per_sample")
    if length is None and all(task.get(k) is not None for k in PAIR_KEYS):
        length = max(int(task[k]) for k in PAIR_KEYS)
    if values.get("max_positions") is None and length is not None:
        values = dict(values, max_positions=length)
    return resolved_settings(values)


def _summary(names: list[str]) -> list[str]:
    """Dropped weight names, one entry per part: ``decoder.* (N weights)``, ``lm_head.weight``."""
    out = []
    for prefix in t5.HF_DROPPED:
        part = [n for n in names if n.startswith(prefix)]
        if part:
            out.append(part[0] if len(part) == 1 else f"{prefix}* ({len(part)} weights)")
    return out


def load_hf(hf_dir, config, seed: int) -> LoadedHF:
    """The encoder as ``T5EncoderModel``; of a ``T5ForConditionalGeneration``, what is dropped is listed."""
    from transformers import T5EncoderModel, T5ForConditionalGeneration

    try:
        t5.check_hf_config(config)
    except ConversionError as exc:
        raise ConversionError(f"{hf_dir}: {exc}") from None
    if WHOLE_MODEL not in (config.architectures or []):
        model, info = load_weights(T5EncoderModel, hf_dir, output_loading_info=True)
        dropped = check_loaded(hf_dir, model, info, may_drop=t5.HF_DROPPED)
        return LoadedHF(model.eval(), dropped=_summary(dropped), seed=seed)
    whole, info = load_weights(T5ForConditionalGeneration, hf_dir, output_loading_info=True)
    check_loaded(hf_dir, whole, info, [k for k in info["missing_keys"] if k.startswith(t5.HF_DROPPED)])
    whole.eval()
    state = whole.state_dict()
    dropped = t5.hf_dropped(state)
    encoder_config = type(config).from_dict({**config.to_dict(), "is_encoder_decoder": False, "use_cache": False})
    encoder = load_hf_state(T5EncoderModel(encoder_config), {k: v for k, v in state.items() if k not in dropped},
                            hf_dir)
    return LoadedHF(encoder, dropped=_summary(dropped), seed=seed)


def to_fairseq(loaded: LoadedHF, config, dictionary) -> FairseqSide:
    """Flags and weights; the MLM head, which transformers' T5 encoder lacks, is new (seeded by ``--seed``)."""
    weights = t5.hf_to_fairseq_state(loaded.model.state_dict(), config, len(dictionary), dictionary.pad(),
                                     loaded.seed)
    head = t5.fresh_head(weights[t5.FS_EMBEDDINGS], loaded.seed)
    weights.update(head)
    positions = getattr(config, "n_positions", None) or DEFAULT_MAX_POSITIONS  # T5 has no table: only a limit
    flags = [*t5.t5_flags(config), "--max-positions", str(positions)]
    fresh = sorted(k for k in head if k != "lm_head.weight")  # lm_head.weight is the embedding table
    return FairseqSide(flags, weights, positions, str(config.num_layers), config.d_model, fresh_head=fresh)


def to_hf(args, dictionary, weights: dict, where):
    from transformers import T5EncoderModel

    config = t5.hf_t5_config(args.args, dictionary.tokenizer_size, dictionary.pad(), dictionary.eos())
    return load_hf_state(T5EncoderModel(config), t5.fairseq_to_hf_state(weights, args.args, dictionary.tokenizer_size),
                         where)


def towers(args, weights: dict, tower: str):
    """The settings and weights of one tower as a one-tower ``t5_encoder`` (see :func:`one_tower`)."""
    return one_tower(args, weights, tower, t5.TOWER_PREFIXES, ("lm_head.weight", t5.FS_EMBEDDINGS))


def card(args, task: dict) -> CardLines:
    s = args.args
    return CardLines(
        f"{s.encoder_layers} layers, d_model {s.encoder_embed_dim}, {s.encoder_attention_heads} heads of "
        f"{s.kv_dim}, FFN {s.encoder_ffn_embed_dim} ({s.feed_forward_proj}), relative positions "
        f"({s.relative_attention_num_buckets} buckets, max distance {s.relative_attention_max_distance})",
        objective_line(task, MLM_KEYS),
    )


FAMILY = Family(
    name="t5", title="T5 encoder", hf_class="T5EncoderModel", model_types=("t5",),
    fairseq_models=("t5_encoder",), default_for=("t5_encoder",), checkpoints="T5 encoder (t5_encoder*)",
    checkpoint_kind="a T5 encoder checkpoint",
    train_flags=("--task", "code_mlm", "--criterion", "masked_lm_with_accuracy"),
    embed_key=t5.FS_EMBEDDINGS, pipeline_tag="feature-extraction", input_names=("input_ids", "attention_mask"),
    fill_settings=fill_settings, positions_setting="max_positions", load_hf=load_hf,
    to_fairseq=to_fairseq, to_hf=to_hf,
    parity=lambda fs_model, hf_model, dictionary, positions: t5.t5_parity(fs_model, hf_model, dictionary),
    card=card, parity_measure="hidden-state", towers=towers, pooled=pooled_embedding,
    contrastive=lambda loaded, config, dictionary, hf_dir: to_fairseq(loaded, config, dictionary),  # t5_encoder
    card_notes="An encoder only: `T5EncoderModel` gives each token's final hidden state (feature extraction). "
               "The fairseq model's masked-LM head (`lm_head.*`) and pooled-embedding projection (`pooler.*`, "
               "when trained with `--pooler-dim`) are not in `T5EncoderModel`: the pooled embedding is written out "
               "below for a contrastive checkpoint, and `--format sentence-transformers` exports it whole.",
)
