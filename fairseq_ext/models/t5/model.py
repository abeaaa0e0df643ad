"""``t5_encoder``: a T5 encoder as a fairseq model (``--arch t5_encoder_small|t5_encoder_base``).

The encoder computes what transformers' ``T5EncoderModel`` computes (see
:mod:`fairseq_ext.models.t5.modules`), so :mod:`fairseq_ext.convert.families.t5_weights` maps it
to and from transformers by renaming tensors. On top of it:

* an MLM head (``lm_head.*``, see :class:`~fairseq_ext.models.t5.modules.T5LMHead`), used
  unless ``features_only``; with ``masked_tokens`` only those positions are projected;
* a pooled embedding for contrastive training, ``model.embed(src_tokens) -> (B, D)``
  (``--pooling first|mean``, ``--pooler-dim``, ``--pooler-normalize``; weights ``pooler.*``);
  with ``--separate-towers`` keys have their own encoder and pooler (``key_encoder.*``,
  ``key_pooler.*``): ``model.embed(tokens, tower="key")``. ``model(query_tokens=Q, key_tokens=K)``
  returns both embeddings in one call (one forward, as DistributedDataParallel wants).

It follows fairseq's RoBERTa calling convention: ``model(src_tokens, features_only=True)``
returns the final hidden states ``(B, T, C)`` and ``{"inner_states": [...]}`` (with
``return_all_hiddens``: the embeddings and every layer's output, ``(T, B, C)`` as fairseq's).

State-dict names: ``encoder.embed_tokens.weight``; ``encoder.layers.{i}.`` +
``self_attn_layer_norm``, ``self_attn.{q,k,v,out}_proj``, ``ffn_layer_norm``,
``ffn.{wi|wi_0,wi_1},wo``; ``encoder.layers.0.self_attn.relative_attention_bias`` (layer 0 only);
``encoder.layer_norm``; ``lm_head.{dense,layer_norm,bias,weight}`` (weight tied to the embeddings);
``pooler.dense`` when ``--pooler-dim`` > 0; ``key_encoder.*``/``key_pooler.*`` with ``--separate-towers``.

Loading a checkpoint that lacks what this model adds (a key tower, a pooler projection: continuing a
``code_mlm`` checkpoint or an imported T5 encoder contrastively) fills it in: the key tower as a copy of
the checkpoint's query tower, a new projection from this model's initialisation (logged).
"""

import logging
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderModel,
    register_model,
    register_model_architecture,
)
from torch import nn

from fairseq_ext.errors import UserError
from fairseq_ext.models.presets import apply_preset, dataclass_defaults, settings_namespace
from fairseq_ext.models.t5.modules import FEED_FORWARD_PROJ, T5Layer, T5LayerNorm, T5LMHead, init_t5_weights
from fairseq_ext.models.towers import POOLINGS, PairEncoder, Pooler

logger = logging.getLogger(__name__)

# the sizes of t5-small and t5-base (their encoders)
T5_SMALL = {"encoder_embed_dim": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "kv_dim": 64,
            "encoder_ffn_embed_dim": 2048}
T5_BASE = {"encoder_embed_dim": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "kv_dim": 64,
           "encoder_ffn_embed_dim": 3072}
DEFAULT_MAX_POSITIONS = 512


def _size_help(what: str, key: str) -> dict:
    return {"help": f"{what} (default: the --arch's, {T5_SMALL[key]} for t5_encoder_small, "
                    f"{T5_BASE[key]} for t5_encoder_base)"}


@dataclass
class T5EncoderConfig(FairseqDataclass):
    """Settings of the ``t5_encoder`` model (transformers' ``T5Config`` names in brackets)."""

    encoder_embed_dim: Optional[int] = field(default=None, metadata=_size_help("hidden size [d_model]",
                                                                               "encoder_embed_dim"))
    encoder_layers: Optional[int] = field(default=None, metadata=_size_help("number of layers [num_layers]",
                                                                            "encoder_layers"))
    encoder_attention_heads: Optional[int] = field(default=None, metadata=_size_help(
        "attention heads [num_heads]", "encoder_attention_heads"))
    kv_dim: Optional[int] = field(default=None, metadata=_size_help("size of each head's keys and values [d_kv]",
                                                                    "kv_dim"))
    encoder_ffn_embed_dim: Optional[int] = field(default=None, metadata=_size_help("feed-forward inner size [d_ff]",
                                                                                   "encoder_ffn_embed_dim"))
    feed_forward_proj: ChoiceEnum(FEED_FORWARD_PROJ) = field(default="relu", metadata={
        "help": "feed-forward: relu (T5 v1.0) or gated-gelu (T5 v1.1, tanh GELU) [feed_forward_proj]"})
    relative_attention_num_buckets: int = field(default=32, metadata={
        "help": "buckets of relative positions (half each direction) [relative_attention_num_buckets]"})
    relative_attention_max_distance: int = field(default=128, metadata={
        "help": "distance from which all relative positions share a bucket [relative_attention_max_distance]"})
    layer_norm_eps: float = field(default=1e-6, metadata={"help": "epsilon of every RMS norm [layer_norm_epsilon]"})
    dropout: float = field(default=0.1, metadata={
        "help": "dropout after embeddings, attention weights, FFN activation, each block and the final norm "
                "[dropout_rate]"})
    max_positions: Optional[int] = field(default=None, metadata={
        "help": "longest input accepted; T5 has no position table, so this is only a limit "
                f"(default: the task's --tokens-per-sample, else {DEFAULT_MAX_POSITIONS})"})
    pooling: ChoiceEnum(POOLINGS) = field(default="mean", metadata={
        "help": "pooled embedding (model.embed): the first token, the mean or the maximum over non-pad tokens"})
    pooler_dim: int = field(default=0, metadata={
        "help": "size of a projection (no bias) after pooling; 0: none, the embedding is the hidden size"})
    pooler_normalize: bool = field(default=False, metadata={"help": "L2-normalise the pooled embedding"})
    separate_towers: bool = field(default=False, metadata={
        "help": "contrastive training: keys get an encoder and pooler of their own (key_encoder.*, key_pooler.*), "
        "started as copies of the query tower's; default: one tower embeds both"})


DEFAULTS = dataclass_defaults(T5EncoderConfig)
PRESETS = {"t5_encoder": T5_SMALL, "t5_encoder_small": T5_SMALL, "t5_encoder_base": T5_BASE}


def resolved_settings(cfg, task=None) -> Namespace:
    """Every setting of a ``t5_encoder`` model as a fresh Namespace, from whatever holds them.

    ``cfg``: the parsed command line, a hydra/checkpoint ``DictConfig``, a dict or a
    :class:`T5EncoderConfig`. Unset values come from the architecture's preset (``_name``/``arch``),
    then the dataclass defaults; ``max_positions`` from the task, else 512. ``cfg`` is not changed.
    """
    args = settings_namespace(cfg, "t5_encoder")
    _architecture(PRESETS.get(args.arch, T5_SMALL))(args)
    if args.max_positions is None:
        task_max = task.max_positions() if task is not None else None
        args.max_positions = task_max if isinstance(task_max, int) else DEFAULT_MAX_POSITIONS
    args.feed_forward_proj, args.pooling = str(args.feed_forward_proj), str(args.pooling)
    _check(args)
    return args


def _check(args: Namespace) -> None:
    for key in ("encoder_embed_dim", "encoder_layers", "encoder_attention_heads", "kv_dim", "encoder_ffn_embed_dim",
                "max_positions"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} (model.{key}) must be at least 1, got {getattr(args, key)}")
    if args.relative_attention_num_buckets < 4:
        raise UserError("--relative-attention-num-buckets (model.relative_attention_num_buckets) must be at least 4, "
                        f"got {args.relative_attention_num_buckets}")
    if args.relative_attention_max_distance <= args.relative_attention_num_buckets // 4:
        raise UserError("--relative-attention-max-distance (model.relative_attention_max_distance) must exceed "
                        f"a quarter of the buckets, got {args.relative_attention_max_distance}")
    if args.feed_forward_proj not in FEED_FORWARD_PROJ:
        raise UserError(f"--feed-forward-proj (model.feed_forward_proj) must be relu or gated-gelu, "
                        f"got {args.feed_forward_proj!r}")
    if args.pooler_dim < 0:
        raise UserError(f"--pooler-dim (model.pooler_dim) must be 0 (none) or positive, got {args.pooler_dim}")


class T5Encoder(FairseqEncoder):
    """Token embeddings (not scaled, no positions), T5 layers, a final RMS norm."""

    def __init__(self, args: Namespace, dictionary):
        super().__init__(dictionary)
        self.padding_idx = dictionary.pad()
        self.max_source_positions = args.max_positions
        self.embed_tokens = nn.Embedding(len(dictionary), args.encoder_embed_dim)  # no padding_idx: as T5
        self.layers = nn.ModuleList([T5Layer(args, has_relative_bias=i == 0) for i in range(args.encoder_layers)])
        self.layer_norm = T5LayerNorm(args.encoder_embed_dim, args.layer_norm_eps)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, src_tokens: torch.Tensor, return_all_hiddens: bool = False):
        """src_tokens: (B, T) -> final hidden states (B, T, C) and the inner states ((T, B, C) each)."""
        padding_mask = src_tokens.eq(self.padding_idx)  # (B, T)
        x = self.dropout(self.embed_tokens(src_tokens))  # (B, T, C)
        mask = torch.zeros(padding_mask.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(padding_mask, torch.finfo(x.dtype).min)[:, None, None, :]  # (B, 1, 1, T)
        attn_bias = self.layers[0].self_attn.position_bias(src_tokens.size(1)).to(x.dtype) + mask  # (B, H, T, T)
        inner_states = [x.transpose(0, 1)] if return_all_hiddens else []
        for layer in self.layers:
            x = layer(x, attn_bias)
            if return_all_hiddens:
                inner_states.append(x.transpose(0, 1))
        return self.dropout(self.layer_norm(x)), inner_states

    def max_positions(self) -> int:
        return self.max_source_positions


@register_model("t5_encoder", dataclass=T5EncoderConfig)
class T5EncoderFairseqModel(PairEncoder, FairseqEncoderModel):
    """A T5 encoder with an MLM head and a pooled embedding, called like fairseq's RoBERTa."""

    def __init__(self, args: Namespace, encoder: T5Encoder):
        super().__init__(encoder)
        self.args = args
        d = args.encoder_embed_dim
        self.lm_head = T5LMHead(d, encoder.embed_tokens.weight, args.layer_norm_eps)
        self.pooler = Pooler(d, args.pooling, args.pooler_dim, args.pooler_normalize)
        if getattr(args, "separate_towers", False):
            self.key_encoder = T5Encoder(args, encoder.dictionary)
            self.key_pooler = Pooler(d, args.pooling, args.pooler_dim, args.pooler_normalize)

    @classmethod
    def build_model(cls, cfg, task):
        args = resolved_settings(cfg, task)
        model = cls(args, T5Encoder(args, task.source_dictionary))
        init_t5_weights(model, args)
        model.encoder.embed_tokens.weight.data.normal_(0.0, 1.0)  # T5's shared embeddings: N(0, 1)
        model.start_key_tower()
        return model

    def forward(self, src_tokens=None, features_only: bool = False, return_all_hiddens: bool = False,
                masked_tokens=None, query_tokens=None, key_tokens=None, **kwargs):
        """-> (x, {"inner_states": [...]}): x is (B, T, C) with ``features_only``, else the vocabulary
        logits (B, T, V), or (N, V) at the ``masked_tokens`` positions.

        With ``query_tokens``/``key_tokens`` (and no ``src_tokens``): -> (query embeddings (B, D) or None,
        key embeddings (B', D) or None), each from its tower.
        """
        if src_tokens is None:
            return self.embed_pair(query_tokens, key_tokens)
        x, inner_states = self.encoder(src_tokens, return_all_hiddens=return_all_hiddens)
        if not features_only:
            x = self.lm_head(x, masked_tokens)
        return x, {"inner_states": inner_states}

    def query_encoder(self) -> T5Encoder:
        return self.encoder

    def features(self, encoder: T5Encoder, tokens: torch.Tensor) -> torch.Tensor:
        return encoder(tokens)[0]

    def head_parameters(self):
        head = self.lm_head  # its tied weight is the embeddings: only the head's own parameters
        return [*head.dense.parameters(), *head.layer_norm.parameters(), head.bias]

    def upgrade_state_dict_named(self, state_dict, name):
        """Fill in what a checkpoint without this model's additions lacks (see the module's docstring)."""
        super().upgrade_state_dict_named(state_dict, name)
        self.fill_towers(state_dict, name + "." if name else "")

    def max_positions(self) -> int:
        return self.encoder.max_positions()


def _architecture(preset: dict):
    def apply(args) -> None:
        apply_preset(args, preset)
        apply_preset(args, DEFAULTS)
        # on the command line the task's --tokens-per-sample is beside the model's settings
        apply_preset(args, {"max_positions": getattr(args, "tokens_per_sample", None)})

    return apply


t5_encoder_small_architecture = register_model_architecture("t5_encoder", "t5_encoder_small")(_architecture(T5_SMALL))
t5_encoder_base_architecture = register_model_architecture("t5_encoder", "t5_encoder_base")(_architecture(T5_BASE))
# register_model(dataclass=...) registered the architecture "t5_encoder" as a no-op; it is t5-small's size: the
# table of fairseq_ext.runtime.patches makes it the t5_encoder_small preset (fairseq has no API to re-register it).
