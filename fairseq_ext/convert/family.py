"""What one model family tells export-hf and import-hf: the entry of :data:`fairseq_ext.convert.registry.FAMILIES`.

A family is a transformers model class and the fairseq models that convert to
and from it. Export and import are generic: everything that differs between
families (names, flags, weight tables, parity inputs, the model card's lines)
is a field here, filled in by the family's own module.
"""

from __future__ import annotations

import dataclasses
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fairseq_ext.convert.common import tower_weights


@dataclass
class LoadedHF:
    """A transformers model read from a directory, ready for conversion."""

    model: Any  # the transformers model the fairseq one is compared with
    fresh_head: list[str] = field(default_factory=list)  # head weights the directory lacked (initialised from --seed)
    dropped: list[str] = field(default_factory=list)  # weights the directory had that the fairseq model does not use
    seed: int = 0  # the import's --seed, for weights made after loading


@dataclass
class FairseqSide:
    """A transformers model as fairseq-train's model flags and a fairseq state dict."""

    flags: list[str]  # --arch ARCH and every size, as fairseq-train takes them
    weights: dict  # the fairseq state dict (embedding rows padded to the dictionary)
    positions: int  # positions the fairseq model takes (its --tokens-per-sample)
    layers: str  # for the report: "6" or "6+6"
    d_model: int
    dropped: list[str] = field(default_factory=list)  # further notes on weights left out
    fresh_head: list[str] = field(default_factory=list)  # fairseq weights made new (from the seed)


@dataclass
class CardLines:
    """The family's rows of the model card."""

    architecture: str  # after "ARCH: ": layers and sizes (the parameter count is appended)
    objective: str


@dataclass
class PooledEmbedding:
    """How a model pools its final hidden states into one vector per sequence (``model.embed``)."""

    pooling: str  # "mean" or "max" over non-pad tokens, or the "first" token
    dense: Any  # the projection's (D, C) weight (no bias), or None
    normalize: bool  # L2-normalised by the model itself


def one_tower(args, weights: dict, tower: str, prefixes: dict, tied: tuple[str, str]):
    """A contrastive checkpoint's ``tower`` as a one-tower model: its settings (``separate_towers`` off), its
    weights under the query tower's names, and whether the checkpoint has separate towers (a family's
    ``towers``; ``prefixes`` and ``tied`` as :func:`fairseq_ext.convert.common.tower_weights` takes them)."""
    one, separate = tower_weights(weights, tower, prefixes, tied)
    return dataclasses.replace(args, args=Namespace(**{**vars(args.args), "separate_towers": False})), one, separate


def pooled_embedding(args, weights: dict) -> Optional[PooledEmbedding]:
    """The pooler of a one-tower model (settings ``pooling``, ``pooler_normalize``; weight ``pooler.dense.weight``,
    the pair interface's names); None for a model without pooling settings (fairseq's ``roberta``)."""
    s = args.args
    if getattr(s, "pooling", None) is None:
        return None
    return PooledEmbedding(str(s.pooling), weights.get("pooler.dense.weight"), bool(s.pooler_normalize))


@dataclass(frozen=True)
class Family:
    """One transformers family and how its models convert to and from fairseq."""

    name: str  # the family's key, as --family and reports spell it: "bert"
    title: str  # for people: "BERT"
    hf_class: str  # the transformers class export-hf writes: "BertForMaskedLM"
    model_types: tuple[str, ...]  # config.json model_type values import-hf takes
    fairseq_models: tuple[str, ...]  # registered fairseq models that export to this family
    default_for: tuple[str, ...]  # those of them that export to it unless --family says otherwise
    checkpoints: str  # the checkpoints it is the default for, in messages: "BERT (hf_bert*)"
    checkpoint_kind: str  # a checkpoint it exports, in messages: "an encoder checkpoint"
    train_flags: tuple[str, ...]  # fairseq-train's --task/--criterion for an imported checkpoint
    embed_key: str  # the fairseq weight whose rows are the (padded) vocabulary
    pipeline_tag: str  # the model card's Hugging Face pipeline
    input_names: Optional[tuple[str, ...]]  # the exported tokenizer's model_input_names (None: its own)
    # (values: dict, model: str, task: dict) -> every model setting, as fairseq fills them when it builds the model
    fill_settings: Callable[[dict, str, dict], Namespace]
    positions_setting: str  # the setting that holds the positions the model takes
    # (hf_dir, config, seed) -> the transformers model to import
    load_hf: Callable[[Path, Any, int], LoadedHF]
    # (loaded, config, dictionary) -> fairseq flags and weights
    to_fairseq: Callable[[LoadedHF, Any, Any], FairseqSide]
    # (settings, dictionary, fairseq weights, the checkpoint for messages) -> the transformers model holding them
    to_hf: Callable[[Any, Any, dict, Any], Any]
    # (fairseq model, transformers model, dictionary, positions) -> largest |difference| on padded batches
    parity: Callable[[Any, Any, Any, int], float]
    # (settings, task settings) -> the model card's rows
    card: Callable[[Any, dict], CardLines]
    parity_measure: str = "logit"  # what parity compares: "logit", "hidden-state"
    # (settings, weights, tower) -> (settings, weights) of that tower alone under the query tower's names, and
    # whether the checkpoint has separate towers; None: the family's models have no towers (no --tower)
    towers: Optional[Callable[[Any, dict, str], tuple[Any, dict, bool]]] = None
    # (one tower's settings, weights) -> its pooled embedding; None: none (no --format sentence-transformers)
    pooled: Optional[Callable[[Any, dict], PooledEmbedding]] = None
    card_notes: str = ""  # a paragraph for the card (what export left out, how to use it)
    # (loaded, config, dictionary, hf_dir) -> the encoder as the family's contrastive model (the pair interface
    # of fairseq_ext.models.towers), flags and weights without its pooler's; None: the family has no such model
    contrastive: Optional[Callable[[LoadedHF, Any, Any, Path], FairseqSide]] = None
    # (to_hf's transformers model, one tower's weights) -> the bare encoder --format sentence-transformers writes,
    # and a note for the card ("": none); None: to_hf's model is that encoder already
    sentence_encoder: Optional[Callable[[Any, dict], tuple[Any, str]]] = None
