"""Reading fairseq checkpoints for conversion: settings, dictionary, model, model card."""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path

import torch

from fairseq_ext.convert.bart import ConversionError
from fairseq_ext.tokenizer import TokenizerError, load_tokenizer
from fairseq_ext.vocab import TokenizerDictionary, tokenizer_path_for


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A fairseq checkpoint, loaded the safe way (see :mod:`fairseq_ext.checkpoints`)."""
    from fairseq_ext.checkpoints import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        try:
            state = safe_torch_load(f, map_location="cpu")
        except (RuntimeError, EOFError, OSError) as exc:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' weights)")
    return state


def model_args(state: dict, path) -> Namespace:
    cfg = state.get("cfg") or {}
    args = cfg.get("model") if isinstance(cfg, dict) else None
    if args is None:
        args = state.get("args")
    if not isinstance(args, Namespace):
        raise ConversionError(f"{path}: checkpoint has no model settings (cfg.model / args)")
    return args


def task_data_dir(state: dict) -> str | None:
    cfg = state.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else None
    data = getattr(task, "data", None) if isinstance(task, Namespace) else (task or {}).get("data")
    if data is None and isinstance(state.get("args"), Namespace):
        data = getattr(state["args"], "data", None)
    return data.split(os.pathsep)[0] if data else None


def checkpoint_tokenizer(state: dict, path, tokenizer=None):
    """TOK given, else the tokenizer.json of the data directory the checkpoint was trained on."""
    if tokenizer is None:
        data = task_data_dir(state)
        if data is None:
            raise ConversionError(f"{path}: checkpoint names no data directory; pass --tokenizer TOK")
        try:
            tokenizer = tokenizer_path_for(data)
        except TokenizerError as exc:
            raise ConversionError(f"{exc}; pass --tokenizer TOK") from None
    return tokenizer, load_tokenizer(tokenizer)


def dictionary_for_rows(tok, rows: int, tok_name, ckpt_name) -> TokenizerDictionary:
    """The tokenizer's dictionary grown by fairseq's padding to ``rows`` entries, or an error naming both."""
    d = TokenizerDictionary.from_tokenizer(tok)
    if rows < d.tokenizer_size or rows - d.tokenizer_size >= 64:
        raise ConversionError(
            f"vocabulary mismatch: {ckpt_name} has {rows} embedding rows, {tok_name} has {d.tokenizer_size} tokens"
        )
    while len(d) < rows:
        d.add_symbol(f"madeupword{len(d) - d.tokenizer_size:04d}", n=0)
    return d


class _DictionaryTask:
    """What fairseq model builders read from a task: its dictionaries."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def build_fairseq_bart(args: Namespace, dictionary, weights: dict):
    from fairseq.models.bart import BARTModel

    model = BARTModel.build_model(Namespace(**vars(args)), _DictionaryTask(dictionary))
    model.load_state_dict(weights, strict=True)
    return model.eval()


def parity_batches(vocab_size: int, roles, special_ids, max_len: int, seed: int = 0):
    """Two padded batches of random ordinary tokens: (src, prev_output_tokens), shaped (B, T)."""
    g = torch.Generator().manual_seed(seed)
    special = set(int(i) for i in special_ids)
    pool = torch.tensor([i for i in range(vocab_size) if i not in special])
    for lengths in ([max_len, max_len // 2, 3], [max_len // 3, max_len // 3 - 1]):
        src = torch.full((len(lengths), max(lengths)), roles.pad, dtype=torch.long)
        for row, n in enumerate(lengths):
            body = pool[torch.randint(len(pool), (n - 2,), generator=g)]
            src[row, :n] = torch.cat([torch.tensor([roles.bos]), body, torch.tensor([roles.eos])])
        prev = torch.full_like(src, roles.pad)
        for row, n in enumerate(lengths):
            prev[row, 0] = roles.eos
            prev[row, 1:n] = src[row, : n - 1]
        yield src, prev
