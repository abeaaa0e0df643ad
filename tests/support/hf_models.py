"""Tiny transformers models saved as the hub has them (tests never download one)."""

from __future__ import annotations

import json

import torch
from transformers import T5Config

from fairseq_ext.vocab.tokenizer import load_tokenizer, save_tokenizer


def t5_dir(out, spm_model, proj: str, cls, seed: int = 0, **kw):
    """A transformers T5 directory as the hub has them: weights, config, a T5Tokenizer without bos."""
    tok = load_tokenizer(spm_model)
    tok.source_tokenizer_class = "T5Tokenizer"
    save_tokenizer(tok, out)
    config_file = out / "tokenizer_config.json"  # the tiny vocabulary has no <extra_id_*> sentinels
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "extra_ids": 0}), encoding="utf-8")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj=proj,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **kw)
    model = cls(config)
    with torch.no_grad():  # norms away from one, so a mapping mistake shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    return out
