"""A whole data directory: splits, dict.txt, the tokenizer and a stats file; or N of them (shards)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.prep.binarizer import binarize_text, check_text_file, is_line_source, source_size
from fairseq_ext.prep.line_encoder import BinarizeError, LineEncoder
from fairseq_ext.prep.mmap_writer import best_dtype
from fairseq_ext.prep.progress import progress_bar
from fairseq_ext.prep.shard_parts import ShardPart
from fairseq_ext.prep.shards import binarize_text_sharded, check_open_files, data_path, shard_dirs
from fairseq_ext.vocab.dict_txt import write_dict_txt
from fairseq_ext.vocab.tokenizer import (
    load_tokenizer,
    save_tokenizer,
    special_roles,
    special_token_ids,
    vocab_in_id_order,
)

SPLIT_PREFIXES = ("train.", "valid.", "test.")


def binarize_directory(
    tokenizer: str | os.PathLike,
    files: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    max_line_tokens: int = 510,
    batch_bytes: int = 4 << 20,
    overwrite: bool = False,
    progress: bool = True,
    shards: int = 1,
    part: Optional[ShardPart] = None,
) -> dict:
    """Binarize ``files`` ({split: a text file, or a :class:`~fairseq_ext.prep.tables.TableText`}) into ``out_dir``.

    Returns ``{"splits": {split: counts}, "files": [names written]}``; the same
    goes to ``out_dir/binarize.json``. Nothing is left behind on failure.
    With ``shards`` > 1, see :func:`binarize_shards`. With ``part`` (one task of an array), only that part of
    the training input, into ``out_dir/shardK`` (:mod:`fairseq_ext.prep.shard_parts`).
    """
    check_arguments(files, max_line_tokens, batch_bytes, shards)
    if part is not None:  # DIR/shardK; the other tasks write their shards into DIR beside it
        part.check_siblings(out_dir)
        files, out_dir, root = part.select(files), part.directory(out_dir), out_dir
    tok, symbols, encoder = load_line_encoder(tokenizer, max_line_tokens)
    dtype = best_dtype(len(symbols))
    sizes = [source_size(p) for p in files.values()]
    total = None if None in sizes else sum(sizes)  # a streamed --dataset has no size: the bar counts up
    result: dict = {"tokenizer": str(tokenizer), "vocab_size": len(symbols), "splits": {}}
    if shards > 1:
        return binarize_shards(tok, symbols, encoder, files, out_dir, shards, result, max_line_tokens=max_line_tokens,
                               batch_bytes=batch_bytes, overwrite=overwrite, progress=progress, total_bytes=total)
    # the bar closes (and clears its line) before an error is printed
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(total, progress) as bar:
        for split, path in files.items():
            bar.set_description(split)
            stats = binarize_text(path, tmp / split, encoder, dtype, batch_bytes, progress=bar.update)
            if stats.items == 0:
                raise BinarizeError(f"{path}: no text to binarize, {_what_was_read(path, stats)} (--{split})")
            result["splits"][split] = stats.as_dict()
        write_dict_txt(symbols, tmp / "dict.txt")
        save_tokenizer(tok, tmp)
        result["max_line_tokens"] = max_line_tokens
        if part is not None:
            result.update(part.as_dict(root))
        (tmp / "binarize.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        result["files"] = sorted(p.name for p in tmp.iterdir())
    return result


def check_arguments(files: Mapping[str, str | os.PathLike], max_line_tokens: int, batch_bytes: int,
                    shards: int) -> None:
    """Refuse, before any work, what :func:`binarize_directory` cannot do: a BinarizeError naming the setting."""
    if not files:
        raise BinarizeError("nothing to binarize: give --train FILE")
    if shards < 1:
        raise BinarizeError(f"--shards must be at least 1, got {shards}")
    for split, path in files.items():
        if not is_line_source(path):  # a table input's text was checked when it was opened
            check_text_file(Path(path), f"--{split}")
    if max_line_tokens < 2:
        raise BinarizeError(f"--max-line-tokens must be at least 2 (one token and eos), got {max_line_tokens}")
    if batch_bytes < 1:
        raise BinarizeError(f"--batch-mb must be > 0 (batch_bytes {batch_bytes})")


def binarize_shards(tok, symbols: list[str], encoder: LineEncoder, files: Mapping[str, str | os.PathLike],
                    out_dir: str | os.PathLike, shards: int, result: dict, *, max_line_tokens: int, batch_bytes: int,
                    overwrite: bool, progress: bool, total_bytes: Optional[int]) -> dict:
    """``out_dir/shard0 ... shard{N-1}``, each a whole data directory; valid and test only in shard0.

    The training documents are dealt out whole (see :mod:`fairseq_ext.prep.shards`).
    ``out_dir/binarize.json`` holds the whole files' counts, each shard's
    counts (``shards``) and the DATA path for fairseq-train (``data_path``);
    ``shardK/binarize.json`` holds that shard's counts only.
    """
    dtype = best_dtype(len(symbols))
    check_open_files(shards)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(total_bytes, progress) as bar:
        dirs = shard_dirs(tmp, shards)
        for d in dirs:
            d.mkdir()
        per_shard: list[dict] = [{} for _ in dirs]
        for split, path in files.items():
            bar.set_description(split)
            if split == "train":
                stats, counts = binarize_text_sharded(path, [d / split for d in dirs], encoder, dtype, batch_bytes,
                                                      progress=bar.update)
            else:  # validation (and test) from the first shard only
                stats = binarize_text(path, dirs[0] / split, encoder, dtype, batch_bytes, progress=bar.update)
                counts = [stats.as_dict()]
            if stats.items == 0:
                raise BinarizeError(f"{path}: no text to binarize, {_what_was_read(path, stats)} (--{split})")
            result["splits"][split] = stats.as_dict()
            for shard, c in zip(per_shard, counts):
                shard[split] = c
        documents = sum(s["train"]["documents"] for s in per_shard)
        if documents < shards:  # then the last shards are empty: the first N documents go to N different shards
            raise BinarizeError(f"--shards {shards}: more shards than documents in {files['train']} ({documents}; "
                                "blank lines separate documents)")
        write_dict_txt(symbols, dirs[0] / "dict.txt")
        save_tokenizer(tok, dirs[0])
        tokenizer_files = sorted(p.name for p in dirs[0].iterdir() if not p.name.startswith(SPLIT_PREFIXES))
        for i, (d, counts) in enumerate(zip(dirs, per_shard)):
            for name in tokenizer_files if i else ():  # byte for byte the first shard's tokenizer
                shutil.copy2(dirs[0] / name, d / name)
            shard_result = {**result, "splits": counts, "shard": i, "shards": shards,
                            "max_line_tokens": max_line_tokens}
            (d / "binarize.json").write_text(json.dumps(shard_result, indent=2) + "\n", encoding="utf-8")
        result["max_line_tokens"] = max_line_tokens
        result["shards"] = [{"dir": d.name, **c["train"]} for d, c in zip(dirs, per_shard)]
        result["data_path"] = data_path(shard_dirs(out_dir, shards))
        (tmp / "binarize.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        result["files"] = sorted(p.name for p in tmp.iterdir())
        result["shard_files"] = sorted(p.name for p in dirs[0].iterdir())
    return result


def _what_was_read(source, stats) -> str:
    """``only blank lines`` for a text file; the rows read and skipped for a table."""
    if not hasattr(source, "table"):
        return "only blank lines"
    return f"only empty rows ({source.table.stats.describe()})"


def load_line_encoder(tokenizer: str | os.PathLike, max_line_tokens: int) -> tuple[object, list[str], LineEncoder]:
    """(the tokenizer, its tokens in id order, a :class:`LineEncoder` over it) for TOK."""
    tok = load_tokenizer(tokenizer)
    symbols, _holes = vocab_in_id_order(tok)
    roles = special_roles(tok)
    roles.require("eos", source=str(tokenizer))
    return tok, symbols, LineEncoder(tok, roles.eos, roles.unk, special_token_ids(tok), max_line_tokens)
