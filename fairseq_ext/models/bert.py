"""``hf_bert``: fairseq's RoBERTa encoder with BERT's token-type embeddings and layer-norm epsilon.

fairseq's ``roberta`` model has no token-type (segment) embeddings and fixes
every layer norm's epsilon at 1e-5. A BERT checkpoint has both (a type table,
epsilon 1e-12), and so do RoBERTa checkpoints trained with transformers. This
model carries them so that ``fairseq-ext import-hf`` maps such a checkpoint
exactly and ``export-hf`` gives it back bit for bit:

* ``encoder.sentence_encoder.embed_token_types.weight``: the type table; the
  masked-LM task has no segments, so row 0 is added to every token (as
  transformers does when no ``token_type_ids`` are given); the other rows are
  kept for export.
* ``--layer-norm-eps``: the epsilon of every layer norm (embeddings, layers,
  LM head).
* ``--hf-model-type bert|roberta``: which transformers family ``export-hf``
  writes by default.
* a pooled embedding and query/key towers for ``--task code_contrastive``
  (:mod:`fairseq_ext.models.towers`: ``--pooling``, ``--pooler-dim``,
  ``--pooler-normalize``, ``--separate-towers``; weights ``pooler.dense``,
  ``key_encoder.*`` named as ``encoder.sentence_encoder.*``, ``key_pooler.dense``);
  ``--hf-pooler`` carries transformers' own pooler layer (``hf_pooler.{weight,bias}``,
  frozen and unused: fairseq_ext's embedding is the Pooler's) so that an imported
  sentence encoder exports back bit for bit.

Its settings are :class:`HFBertConfig` (flags, hydra ``model.*`` keys, the
``cfg.model`` of a checkpoint). The architectures ``hf_bert``/``hf_bert_base``
and ``hf_bert_large`` are presets: they fill the sizes the user left unset.
(fairseq's own ``bert_base``/``bert_large`` belong to its older ``masked_lm`` model, hence the
``hf_`` prefix.) Everything else (weights, names, the LM head, positions starting at pad + 1)
is fairseq's RoBERTa, so its tasks, criteria and hub work unchanged.
"""

import logging
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.transformer import DEFAULT_MIN_PARAMS_TO_WRAP, TransformerEncoder
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from fairseq_ext.errors import UserError
from fairseq_ext.models.presets import apply_preset, dataclass_defaults, settings_namespace
from fairseq_ext.models.towers import POOLINGS, PairEncoder, Pooler

logger = logging.getLogger(__name__)

BERT_BASE = {"encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
             "encoder_attention_heads": 12}
BERT_LARGE = {"encoder_layers": 24, "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
              "encoder_attention_heads": 16}
ACTIVATION_FNS = ChoiceEnum(utils.get_available_activation_fns())
HF_MODEL_TYPES = ChoiceEnum(["bert", "roberta"])


def _size_help(what: str, key: str) -> dict:
    return {"help": f"{what} (default: the --arch's, {BERT_BASE[key]} for hf_bert_base, "
                    f"{BERT_LARGE[key]} for hf_bert_large)"}


@dataclass
class HFBertConfig(FairseqDataclass):
    """Settings of the ``hf_bert`` model: fairseq RoBERTa's, plus token types, epsilon and HF family."""

    encoder_layers: Optional[int] = field(default=None, metadata=_size_help("number of layers", "encoder_layers"))
    encoder_embed_dim: Optional[int] = field(default=None, metadata=_size_help(
        "hidden size", "encoder_embed_dim"))
    encoder_ffn_embed_dim: Optional[int] = field(default=None, metadata=_size_help(
        "feed-forward inner size", "encoder_ffn_embed_dim"))
    encoder_attention_heads: Optional[int] = field(default=None, metadata=_size_help(
        "attention heads", "encoder_attention_heads"))
    max_positions: Optional[int] = field(default=None, metadata={
        "help": "number of learned positions (default: the task's --tokens-per-sample)"})
    type_vocab_size: int = field(default=2, metadata={
        "help": "rows of the token-type table (BERT: 2); row 0 is added to every token"})
    layer_norm_eps: float = field(default=1e-12, metadata={
        "help": "epsilon of every layer norm (BERT: 1e-12, RoBERTa: 1e-5)"})
    hf_model_type: HF_MODEL_TYPES = field(default="bert", metadata={
        "help": "transformers family export-hf writes by default"})
    activation_fn: ACTIVATION_FNS = field(default="gelu", metadata={"help": "activation function"})
    pooler_activation_fn: ACTIVATION_FNS = field(default="tanh", metadata={
        "help": "activation of a classification head's pooler"})
    encoder_normalize_before: bool = field(default=False, metadata={
        "help": "layer norm before each block (pre-norm; transformers' BERT cannot express it)"})
    layernorm_embedding: Optional[bool] = field(default=None, metadata={
        "help": "layer norm on the embeddings (default: on, as in BERT; the flag is kept from RoBERTa)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout probability of attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout probability after the FFN activation"})
    pooler_dropout: float = field(default=0.0, metadata={"help": "dropout probability in a classification head"})
    untie_weights_roberta: bool = field(default=False, metadata={
        "help": "an output projection of its own instead of the word embeddings"})
    load_checkpoint_heads: bool = field(default=False, metadata={
        "help": "(re-)register and load classification heads when loading checkpoints"})
    encoder_layerdrop: float = field(default=0.0, metadata={"help": "LayerDrop probability"})
    encoder_layers_to_keep: Optional[str] = field(default=None, metadata={
        "help": "which layers to keep when pruning, comma-separated"})
    quant_noise_pq: float = field(default=0.0, metadata={"help": "iterative PQ quantization noise at training time"})
    quant_noise_pq_block_size: int = field(default=8, metadata={"help": "block size of PQ quantization noise"})
    quant_noise_scalar: float = field(default=0.0, metadata={"help": "scalar quantization noise"})
    spectral_norm_classification_head: bool = field(default=False, metadata={
        "help": "spectral normalisation on a classification head"})
    min_params_to_wrap: int = field(default=DEFAULT_MIN_PARAMS_TO_WRAP, metadata={
        "help": "minimum parameters of a layer wrapped with FSDP (--ddp-backend fully_sharded)"})
    checkpoint_activations: bool = field(default=False, metadata={"help": "checkpoint activations at each layer"})
    offload_activations: bool = field(default=False, metadata={
        "help": "move checkpointed activations to the CPU after use"})
    mha_reg_scale_factor: float = field(default=0.0, metadata={
        "help": "AdaPrune regularisation of attention heads (fairseq RoBERTa's)"})
    ffn_reg_scale_factor: float = field(default=0.0, metadata={
        "help": "AdaPrune regularisation of FFN blocks (fairseq RoBERTa's)"})
    mha_heads_to_keep: int = field(default=-1, metadata={"help": "attention heads to keep per layer; -1: all"})
    ffn_blocks_to_remove: int = field(default=-1, metadata={"help": "FFN blocks to remove per layer; -1: none"})
    pooling: ChoiceEnum(POOLINGS) = field(default="mean", metadata={
        "help": "pooled embedding (model.embed, code_contrastive): the first token ([CLS]/<s>), the mean or the "
        "maximum over non-pad tokens"})
    pooler_dim: int = field(default=0, metadata={
        "help": "size of a projection (no bias) after pooling; 0: none, the embedding is the hidden size"})
    pooler_normalize: bool = field(default=False, metadata={"help": "L2-normalise the pooled embedding"})
    separate_towers: bool = field(default=False, metadata={
        "help": "contrastive training: keys get an encoder and pooler of their own (key_encoder.*, key_pooler.*), "
        "started as copies of the query tower's; default: one tower embeds both"})
    hf_pooler: bool = field(default=False, metadata={
        "help": "carry transformers' pooler layer (dense + tanh on the first token; frozen, unused in training) "
        "so that export-hf writes it back: set by import-hf when the directory has one"})


DEFAULTS = dataclass_defaults(HFBertConfig)


class TypedTransformerEncoder(TransformerEncoder):
    """TransformerEncoder whose embedding adds token-type row 0 before the positions (transformers' order)."""

    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens)
        self.embed_token_types = nn.Embedding(args.type_vocab_size, embed_tokens.embedding_dim)

    def forward_embedding(self, src_tokens, token_embedding=None):
        if token_embedding is None:
            token_embedding = self.embed_tokens(src_tokens)
        x = embed = self.embed_scale * token_embedding  # (B, T, C)
        x = x + self.embed_token_types.weight[0]
        if self.embed_positions is not None:
            x = x + self.embed_positions(src_tokens)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout_module(x)
        if self.quant_noise is not None:
            x = self.quant_noise(x)
        return x, embed


class BertEncoder(RobertaEncoder):
    def __init__(self, args, dictionary):
        super().__init__(args, dictionary)
        _set_layer_norm_eps(self, args.layer_norm_eps)

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = TypedTransformerEncoder(args, dictionary, embed_tokens)
        encoder.apply(init_bert_params)
        return encoder

    def build_key_encoder(self, args) -> TypedTransformerEncoder:
        """A second sentence encoder of the same shape (the key tower), with its own embeddings."""
        embed = self.build_embedding(len(self.dictionary), args.encoder_embed_dim, self.dictionary.pad())
        encoder = self.build_encoder(args, self.dictionary, embed)
        _set_layer_norm_eps(encoder, args.layer_norm_eps)
        return encoder


def _set_layer_norm_eps(module: nn.Module, eps: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.LayerNorm) or type(m).__name__ == "FusedLayerNorm":
            m.eps = eps


def resolved_args(cfg, task=None) -> Namespace:
    """Every setting of an ``hf_bert`` model as a fresh Namespace, from whatever holds them.

    ``cfg``: the parsed command line (Namespace), a hydra/checkpoint ``DictConfig`` or plain dict,
    or an :class:`HFBertConfig`. Unset values come from the architecture's preset (``_name``/``arch``),
    then :class:`HFBertConfig`'s defaults; ``max_positions`` is the task's where neither says.
    ``cfg`` itself is not changed.
    """
    args = settings_namespace(cfg, "hf_bert")
    _architecture(PRESETS.get(args.arch, {}))(args)
    if args.max_positions is None and task is not None:
        args.max_positions = task.max_positions()
    for key in ("activation_fn", "pooler_activation_fn", "hf_model_type", "pooling"):
        setattr(args, key, str(getattr(args, key)))  # a ChoiceEnum member from a config -> its name
    if args.pooler_dim < 0:
        raise UserError(f"--pooler-dim (model.pooler_dim) must be 0 (none) or positive, got {args.pooler_dim}")
    if args.type_vocab_size < 1:
        raise UserError(f"--type-vocab-size (model.type_vocab_size) must be at least 1, got {args.type_vocab_size}")
    if args.max_positions is None or args.max_positions < 1:
        raise UserError(f"--max-positions (model.max_positions) must be at least 1, got {args.max_positions}")
    return args


@register_model("hf_bert", dataclass=HFBertConfig)
class BertModel(PairEncoder, RobertaModel):
    """RoBERTa with BERT's token-type embeddings and a configurable layer-norm epsilon, a pooled
    embedding and query/key towers."""

    QUERY_PREFIX = "encoder.sentence_encoder."

    def __init__(self, args, encoder: BertEncoder):
        super().__init__(args, encoder)  # RobertaModel initialises what is built so far (init_bert_params)
        d = args.encoder_embed_dim
        self.pooler = Pooler(d, args.pooling, args.pooler_dim, args.pooler_normalize)
        self.pooler.apply(init_bert_params)
        if args.separate_towers:
            self.key_encoder = encoder.build_key_encoder(args)
            self.key_pooler = Pooler(d, args.pooling, args.pooler_dim, args.pooler_normalize)
        if args.hf_pooler:
            self.hf_pooler = nn.Linear(d, d)
            self.hf_pooler.apply(init_bert_params)
            self.hf_pooler.requires_grad_(False)
        self.start_key_tower()

    @classmethod
    def add_args(cls, parser):
        # RobertaModel's add_args would add fairseq's flag list; ours come from the dataclass
        # (no defaults, so that the --arch preset can fill what the user left unset).
        gen_parser_from_dataclass(parser, HFBertConfig(), delete_default=True)

    @classmethod
    def build_model(cls, cfg, task):
        args = resolved_args(cfg, task)
        return cls(args, BertEncoder(args, task.source_dictionary))

    def forward(self, src_tokens=None, features_only=False, return_all_hiddens=False, classification_head_name=None,
                query_tokens=None, key_tokens=None, **kwargs):
        """RoBERTa's forward; with ``query_tokens``/``key_tokens`` (and no ``src_tokens``): -> (query
        embeddings (B, D) or None, key embeddings (B', D) or None), each from its tower."""
        if src_tokens is None:
            return self.embed_pair(query_tokens, key_tokens)
        return super().forward(src_tokens, features_only, return_all_hiddens, classification_head_name, **kwargs)

    def query_encoder(self) -> TypedTransformerEncoder:
        return self.encoder.sentence_encoder

    def features(self, encoder: TypedTransformerEncoder, tokens: torch.Tensor) -> torch.Tensor:
        return encoder(tokens)["encoder_out"][0].transpose(0, 1)  # (T, B, C) -> (B, T, C)

    def head_parameters(self):
        head = self.encoder.lm_head  # its weight is the embeddings unless --untie-weights-roberta
        own = [*head.dense.parameters(), *head.layer_norm.parameters(), head.bias]
        return own if head.weight is self.encoder.sentence_encoder.embed_tokens.weight else [*own, head.weight]

    def upgrade_state_dict_named(self, state_dict, name):
        """RoBERTa's, then fill in what the checkpoint lacks: a token-type table (a fairseq ``roberta``
        checkpoint: zeros, which change nothing), transformers' pooler (--hf-pooler), the towers' additions."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        own = self.state_dict()
        types = self.QUERY_PREFIX + "embed_token_types.weight"
        if prefix + types not in state_dict and prefix + self.QUERY_PREFIX + "embed_tokens.weight" in state_dict:
            state_dict[prefix + types] = torch.zeros_like(own[types])
            logger.info(f"checkpoint has no token-type table: {types} starts as zeros (a RoBERTa checkpoint)")
        added = [k for k in own if k.startswith("hf_pooler.") and prefix + k not in state_dict]
        for k in added:
            state_dict[prefix + k] = own[k].clone()
        self.fill_towers(state_dict, prefix)


def _architecture(preset: dict):
    def apply(args) -> None:
        apply_preset(args, preset)
        apply_preset(args, BERT_BASE)
        apply_preset(args, {"layernorm_embedding": True})  # BERT's (the field is None unless set)
        apply_preset(args, DEFAULTS)
        # on the command line the task's --tokens-per-sample is beside the model's settings
        apply_preset(args, {"max_positions": getattr(args, "tokens_per_sample", None)})

    return apply


PRESETS = {"hf_bert": {}, "hf_bert_base": BERT_BASE, "hf_bert_large": BERT_LARGE}
bert_base_named_architecture = register_model_architecture("hf_bert", "hf_bert_base")(_architecture(BERT_BASE))
bert_large_architecture = register_model_architecture("hf_bert", "hf_bert_large")(_architecture(BERT_LARGE))
# register_model(dataclass=...) registered the architecture "hf_bert" as a no-op; it is BERT-base too: the
# table of fairseq_ext.runtime.patches makes it the hf_bert_base preset (fairseq has no API to re-register it).
