"""BART presets registered on fairseq's ``bart`` model.

A preset is a table of settings applied where the command line left a value
unset; fairseq's own ``bart_base`` architecture then fills everything else.
"""

from argparse import Namespace

from fairseq.models import register_model_architecture
from fairseq.models.bart.model import bart_base_architecture

from fairseq_ext.models.presets import apply_preset

# 6+6 layers, 512 wide, 8 heads, FFN 2048; everything else as bart_base.
BART_SMALL = {
    "encoder_layers": 6, "decoder_layers": 6,
    "encoder_embed_dim": 512, "decoder_embed_dim": 512,
    "encoder_ffn_embed_dim": 2048, "decoder_ffn_embed_dim": 2048,
    "encoder_attention_heads": 8, "decoder_attention_heads": 8,
}


@register_model_architecture("bart", "bart_small")
def bart_small_architecture(args: Namespace) -> None:
    apply_preset(args, BART_SMALL)
    bart_base_architecture(args)
