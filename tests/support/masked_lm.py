"""A masked-LM batch made by fairseq_ext's dataset and tiny models of two families, for step-level tests."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import torch
from fairseq.models.roberta.model import RobertaModel, base_architecture

from fairseq_ext.data.masked_lm_dataset import HFMaskedLMDataset
from fairseq_ext.data.masking import MaskConfig
from fairseq_ext.models.t5.model import T5EncoderFairseqModel


def batch(d, pad_to_multiple: int, lengths=(13, 9, 21, 5)) -> dict:
    rng = np.random.default_rng(0)
    blocks = [torch.from_numpy(np.concatenate([[d.bos()], rng.integers(10, d.tokenizer_size, n - 1)]))
              for n in lengths]
    data = HFMaskedLMDataset(blocks, [len(b) for b in blocks], d, MaskConfig(mask_prob=0.3), seed=3,
                             pad_to_multiple=pad_to_multiple)
    return data.collater([data[i] for i in range(len(blocks))])


def model(kind: str, d) -> torch.nn.Module:
    torch.manual_seed(0)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d, max_positions=lambda: 64)
    if kind == "t5":
        return T5EncoderFairseqModel.build_model({"arch": "t5_encoder_small", "encoder_layers": 2, "kv_dim": 8,
                                                  "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                                                  "encoder_attention_heads": 4}, task).eval()
    args = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                              encoder_attention_heads=4, max_positions=64)
    base_architecture(args)
    return RobertaModel.build_model(args, task).eval()
