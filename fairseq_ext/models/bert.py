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

(fairseq's own ``bert_base``/``bert_large`` belong to its older ``masked_lm`` model, hence the
``hf_`` prefix.) Everything else (weights, names, the LM head, positions starting at pad + 1)
is fairseq's RoBERTa, so its tasks, criteria and hub work unchanged.
"""

from argparse import Namespace

import torch.nn as nn
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.models.transformer import TransformerEncoder
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from fairseq.utils import safe_hasattr

from fairseq_ext.models.presets import apply_preset

BERT_DEFAULTS = {"type_vocab_size": 2, "layer_norm_eps": 1e-12, "hf_model_type": "bert"}
BERT_LARGE = {"encoder_layers": 24, "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
              "encoder_attention_heads": 16}


class TypedTransformerEncoder(TransformerEncoder):
    """TransformerEncoder whose embedding adds token-type row 0 before the positions (transformers' order)."""

    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens)
        self.embed_token_types = nn.Embedding(args.type_vocab_size, embed_tokens.embedding_dim)

    def forward_embedding(self, src_tokens, token_embedding=None):
        if token_embedding is None:
            token_embedding = self.embed_tokens(src_tokens)
        x = embed = self.embed_scale * token_embedding
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
        for module in self.modules():
            if isinstance(module, nn.LayerNorm) or type(module).__name__ == "FusedLayerNorm":
                module.eps = args.layer_norm_eps

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = TypedTransformerEncoder(args, dictionary, embed_tokens)
        encoder.apply(init_bert_params)
        return encoder


@register_model("hf_bert")
class BertModel(RobertaModel):
    """RoBERTa with BERT's token-type embeddings and a configurable layer-norm epsilon."""

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        parser.add_argument("--type-vocab-size", type=int, metavar="N",
                            help="rows of the token-type table (BERT: 2); row 0 is added to every token")
        parser.add_argument("--layer-norm-eps", type=float, metavar="EPS",
                            help="epsilon of every layer norm (BERT: 1e-12, RoBERTa: 1e-5)")
        parser.add_argument("--hf-model-type", choices=["bert", "roberta"],
                            help="transformers family export-hf writes by default")

    @classmethod
    def build_model(cls, args, task):
        from omegaconf import OmegaConf

        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, False)
        bert_base_architecture(args)
        if not safe_hasattr(args, "max_positions"):
            if not safe_hasattr(args, "tokens_per_sample"):
                args.tokens_per_sample = task.max_positions()
            args.max_positions = args.tokens_per_sample
        if args.type_vocab_size < 1:
            raise ValueError(f"--type-vocab-size must be at least 1, got {args.type_vocab_size}")
        encoder = BertEncoder(args, task.source_dictionary)
        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, True)
        return cls(args, encoder)


@register_model_architecture("hf_bert", "hf_bert")
def bert_base_architecture(args: Namespace) -> None:
    apply_preset(args, BERT_DEFAULTS)
    roberta_base_architecture(args)


@register_model_architecture("hf_bert", "hf_bert_base")
def bert_base_named_architecture(args: Namespace) -> None:
    bert_base_architecture(args)


@register_model_architecture("hf_bert", "hf_bert_large")
def bert_large_architecture(args: Namespace) -> None:
    apply_preset(args, BERT_LARGE)
    bert_base_architecture(args)
