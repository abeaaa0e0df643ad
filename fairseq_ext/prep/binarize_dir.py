"""A whole data directory: splits, dict.txt, the tokenizer and a stats file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.prep.binarizer import BinarizeError, LineEncoder, best_dtype, binarize_text, check_text_file
from fairseq_ext.tokenizer import (
    load_tokenizer,
    save_tokenizer,
    special_roles,
    special_token_ids,
    vocab_in_id_order,
    write_dict_txt,
)


def binarize_directory(
    tokenizer: str | os.PathLike,
    files: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    max_line_tokens: int = 510,
    batch_bytes: int = 4 << 20,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Binarize ``files`` ({split: path}) with ``tokenizer`` into ``out_dir``.

    Returns ``{"splits": {split: counts}, "files": [names written]}``; the same
    goes to ``out_dir/binarize.json``. Nothing is left behind on failure.
    """
    if not files:
        raise BinarizeError("nothing to binarize: give --train FILE")
    for split, path in files.items():
        check_text_file(Path(path), f"--{split}")
    if max_line_tokens < 2:
        raise BinarizeError(f"--max-line-tokens must be at least 2 (one token and eos), got {max_line_tokens}")
    if batch_bytes < 1:
        raise BinarizeError(f"--batch-mb must be > 0 (batch_bytes {batch_bytes})")
    tok, symbols, encoder = load_line_encoder(tokenizer, max_line_tokens)
    dtype = best_dtype(len(symbols))
    total = sum(Path(p).stat().st_size for p in files.values())
    result: dict = {"tokenizer": str(tokenizer), "vocab_size": len(symbols), "splits": {}}
    # the bar closes (and clears its line) before an error is printed
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, _progress_bar(total, progress) as bar:
        for split, path in files.items():
            bar.set_description(split)
            stats = binarize_text(path, tmp / split, encoder, dtype, batch_bytes, progress=bar.update)
            if stats.items == 0:
                raise BinarizeError(f"{path}: no text to binarize, only blank lines (--{split})")
            result["splits"][split] = stats.as_dict()
        write_dict_txt(symbols, tmp / "dict.txt")
        save_tokenizer(tok, tmp)
        result["max_line_tokens"] = max_line_tokens
        (tmp / "binarize.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        result["files"] = sorted(p.name for p in tmp.iterdir())
    return result


def load_line_encoder(tokenizer: str | os.PathLike, max_line_tokens: int) -> tuple[object, list[str], LineEncoder]:
    """(the tokenizer, its tokens in id order, a :class:`LineEncoder` over it) for TOK."""
    tok = load_tokenizer(tokenizer)
    symbols, _holes = vocab_in_id_order(tok)
    roles = special_roles(tok)
    roles.require("eos", source=str(tokenizer))
    return tok, symbols, LineEncoder(tok, roles.eos, roles.unk, special_token_ids(tok), max_line_tokens)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                dynamic_ncols=True, leave=False)
