"""Small pairs directories and contrastive checkpoints for retrieval tests (no training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fairseq_ext.cli.main import main
from support.code_data import STDLIB


def small_pairs(out: Path, tokenizer) -> Path:
    """A pairs directory over five standard-library modules (train and valid both hold pairs)."""
    src = out.parent / f"{out.name}-src"
    src.mkdir(parents=True)
    for name in ("colorsys.py", "heapq.py", "textwrap.py", "bisect.py", "shlex.py"):
        shutil.copyfile(STDLIB / name, src / name)
    assert main(["code-pairs", str(src), "-o", str(out), "--tokenizer", str(tokenizer), "--split-by", "file",
                 "--valid-ratio", "0.4", "--quiet"]) == 0
    return out


def untrained_checkpoint(path: Path, tokenizer, data: Path, seed: int = 0, separate_towers: bool = False) -> Path:
    """An untrained t5_encoder saved as fairseq-train saves a code_contrastive checkpoint (cfg, task_state);
    with ``separate_towers`` the key tower differs from the query tower."""
    from fairseq_ext.models.t5.model import T5EncoderFairseqModel
    from fairseq_ext.vocab.dictionary import TokenizerDictionary
    from fairseq_ext.vocab.identity import tokenizer_task_state
    from fairseq_ext.vocab.tokenizer import load_tokenizer

    d = TokenizerDictionary.from_tokenizer(load_tokenizer(tokenizer))
    model_cfg = {"_name": "t5_encoder", "arch": "t5_encoder_small", "encoder_layers": 1, "encoder_embed_dim": 16,
                 "kv_dim": 4, "encoder_ffn_embed_dim": 32, "encoder_attention_heads": 4, "max_positions": 128,
                 "pooler_dim": 8, "separate_towers": separate_towers}
    torch.manual_seed(seed)
    model = T5EncoderFairseqModel.build_model(model_cfg, _Task(d))
    if separate_towers:
        with torch.no_grad():
            for p in (*model.key_encoder.parameters(), *model.key_pooler.parameters()):
                p.add_(torch.randn_like(p) * 0.5)
    torch.save({
        "args": None, "model": model.state_dict(), "criterion": None, "extra_state": {},
        "cfg": {"model": model_cfg, "criterion": {"_name": "info_nce", "similarity": "cosine"},
                "task": {"_name": "code_contrastive", "data": str(data), "max_query_tokens": 64, "max_key_tokens": 96}},
        "optimizer_history": [{"criterion_name": "InfoNCECriterion", "num_updates": 0}],
        "task_state": tokenizer_task_state(d.identity()),
    }, path)
    return path


class _Task:
    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary

    def max_positions(self):
        return 128
