"""A checkpoint's model settings as one typed object, whatever form the checkpoint keeps them in.

fairseq checkpoints hold their settings as an ``argparse.Namespace`` (``args``,
older fairseq-train), a ``cfg.model`` Namespace or dict (fairseq-train 0.12),
a plain dict with ``_name`` (fairseq-hydra-train), or an omegaconf
``DictConfig``. :func:`fairseq_ext.convert.registry.checkpoint_model_settings` reads any of these in one
place: the values the checkpoint lacks are filled by the architecture itself
(its registered architecture function, then the builder's own defaults, as
fairseq does when it builds the model), so they are the real fairseq defaults
of that architecture, and the converters read typed fields only.
"""

from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class CheckpointModelSettings:
    """What conversion reads of a fairseq model's settings (BART, RoBERTa, hf_bert, ...)."""

    arch: str
    model: str  # the registered fairseq model (its family in :mod:`fairseq_ext.convert.families`)
    encoder_layers: int
    encoder_embed_dim: int
    encoder_ffn_embed_dim: int
    encoder_attention_heads: int
    dropout: float
    # transformer layers (BART, roberta, hf_bert); T5's are fixed by its design
    activation_fn: Optional[str] = None
    attention_dropout: Optional[float] = None
    activation_dropout: Optional[float] = None
    encoder_normalize_before: Optional[bool] = None
    layernorm_embedding: Optional[bool] = None
    no_scale_embedding: Optional[bool] = None
    encoder_learned_pos: Optional[bool] = None
    no_token_positional_embeddings: Optional[bool] = None
    # encoders (roberta, hf_bert)
    max_positions: Optional[int] = None
    untie_weights_roberta: bool = False
    # hf_bert
    type_vocab_size: Optional[int] = None
    layer_norm_eps: Optional[float] = None
    hf_model_type: Optional[str] = None
    # BART
    decoder_layers: Optional[int] = None
    decoder_ffn_embed_dim: Optional[int] = None
    decoder_attention_heads: Optional[int] = None
    decoder_normalize_before: bool = False
    max_source_positions: Optional[int] = None
    max_target_positions: Optional[int] = None
    share_all_embeddings: bool = False
    # positions the model takes (BART's source length, an encoder's max_positions): its family says which
    positions: Optional[int] = None
    # every setting, as the model builder takes them
    args: Namespace = field(default_factory=Namespace, compare=False, repr=False)


def section(state: dict, name: str) -> dict:
    """The ``model`` or ``task`` settings of a checkpoint as a plain dict (flat ``args`` for old ones)."""
    from omegaconf import OmegaConf

    cfg = state.get("cfg")
    value = None
    if cfg is not None:
        value = cfg.get(name) if isinstance(cfg, dict) or OmegaConf.is_config(cfg) else None
    if value is None:
        value = state.get("args")
    if value is None:
        return {}
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Namespace):
        return dict(vars(value))
    return dict(value) if isinstance(value, dict) else {}


def task_data_dir(state: dict) -> str | None:
    """The (first) data directory the checkpoint was trained on."""
    data = section(state, "task").get("data")
    return str(data).split(os.pathsep)[0] if data else None
