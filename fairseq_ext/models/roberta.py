"""RoBERTa presets registered on fairseq's ``roberta`` model (see :mod:`fairseq_ext.models.bart`)."""

from argparse import Namespace

from fairseq.models import register_model_architecture
from fairseq.models.roberta.model import base_architecture

from fairseq_ext.models.presets import apply_preset

# 4 layers, 512 wide, 8 heads, FFN 2048: a quick-experiment size; everything else as roberta_base.
ROBERTA_SMALL = {
    "encoder_layers": 4, "encoder_embed_dim": 512, "encoder_ffn_embed_dim": 2048, "encoder_attention_heads": 8,
}


@register_model_architecture("roberta", "roberta_small")
def roberta_small_architecture(args: Namespace) -> None:
    apply_preset(args, ROBERTA_SMALL)
    base_architecture(args)
