"""Source trees -> a ``datasets.DatasetDict`` on disk (and optionally fairseq's mmap format).

Two passes. The first walks the trees and keeps what passes the name checks
(:mod:`fairseq_ext.prep.code_files`): paths and sizes only; a table of source
files is read once, its rows' texts spooled (:mod:`fairseq_ext.prep.code_tables`). Units are then
assigned to splits (:mod:`fairseq_ext.prep.code_splits`). The second reads
the files split by split (train, valid, test; sorted by path within a split),
checks their bytes, drops exact duplicates (the first copy in that order is
kept: a file in train and valid stays in train only), and encodes batches with
the fast tokenizer's ``encode_batch`` in a thread while the previous batch is
written: Arrow record batches (and ``.bin/.idx``) as they come, so memory is
bounded by the batch size, not the corpus.

With ``num_shards`` N > 1 a run writes the ``shard_index``-th of N parts: every shard plans the splits over
the whole input (names and sizes), then reads, checks and writes only the files
:func:`~fairseq_ext.prep.code_splits.shard_of` deals to it (by their size, so exact duplicates meet in one
shard). The N outputs together hold exactly the files of one unsharded run, each in the same split.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_ext.errors import UserError
from fairseq_ext.io_utils import atomic_output_dir, check_output_dir
from fairseq_ext.prep.arrow_dataset_dict import ARROW_SHARD, finish_dataset_dict
from fairseq_ext.prep.code_files import (
    SKIP_REASONS,
    Selection,
    SourceFile,
    WalkStats,
    content_reason,
    sha256_hex,
    walk_sources,
)
from fairseq_ext.prep.code_sources import SourceRoot, check_sources
from fairseq_ext.prep.code_splits import shard_of, split_files
from fairseq_ext.prep.code_tables import CodeTableConfig, Spool, table_files
from fairseq_ext.prep.progress import progress_bar
from fairseq_ext.prep.tables import TableStats

FORMATS = ("arrow", "mmap", "both")


@dataclass
class CodeDatasetConfig:
    tokenizer: str
    valid_ratio: float = 0.05
    test_ratio: float = 0.0
    split_by: str = "directory"
    split_depth: int = 1
    seed: int = 0
    selection: Selection = field(default_factory=Selection)
    max_bytes: int = 1 << 20
    format: str = "arrow"
    batch_bytes: int = 1 << 20
    table: CodeTableConfig = field(default_factory=CodeTableConfig)  # how a SRC that is a table is read
    num_shards: int = 1
    shard_index: int = 0

    def mine(self, size: int) -> bool:
        """Whether a file of ``size`` bytes is this shard's (always, unsharded)."""
        return self.num_shards == 1 or shard_of(size, self.num_shards) == self.shard_index


def features():
    import datasets

    ids = datasets.List(datasets.Value("int32")) if hasattr(datasets, "List") else \
        datasets.Sequence(datasets.Value("int32"))
    return datasets.Features({
        "path": datasets.Value("string"), "project": datasets.Value("string"),
        "language": datasets.Value("string"), "sha256": datasets.Value("string"),
        "num_bytes": datasets.Value("int64"), "input_ids": ids, "length": datasets.Value("int32"),
    })


def build_code_dataset(srcs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, cfg: CodeDatasetConfig,
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write the code dataset directory ``out_dir``; return (and write to ``code_dataset.json``) every count."""
    from fairseq_ext.prep.binarize_dir import load_line_encoder
    from fairseq_ext.vocab.dict_txt import write_dict_txt
    from fairseq_ext.vocab.tokenizer import save_tokenizer

    if cfg.format not in FORMATS:
        raise UserError(f"--format {cfg.format!r}: choose one of {', '.join(FORMATS)}")
    check_shard(cfg)
    sources = check_sources(srcs)
    check_output_dir(out_dir, overwrite)  # before the walk: say so at once
    tok, symbols, encoder = load_line_encoder(cfg.tokenizer, 2)
    with Spool(spool_dir(out_dir)) as spool:
        walk, candidates, plan = plan_splits(sources, cfg, spool, progress)
        stats = {
            "sources": [str(s) for s in srcs], "tokenizer": str(cfg.tokenizer), "vocab_size": len(symbols),
            "format": cfg.format, "split_by": cfg.split_by, "split_depth": cfg.split_depth, "seed": cfg.seed,
            "valid_ratio": cfg.valid_ratio, "test_ratio": cfg.test_ratio, "max_bytes": cfg.max_bytes,
            "languages": sorted(cfg.selection.languages) if cfg.selection.languages else None,
            "files_seen": walk.files_seen, "candidates": len(candidates), **shard_stats(cfg, plan),
        }
        skipped = Counter(walk.skipped)
        seen: set[bytes] = set()
        total = sum(f.size for rows in plan.values() for f, _u in rows)
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(total, progress) as bar:
            split_stats = {}
            for split, rows in plan.items():
                bar.set_description(split)
                writer = _SplitWriter(split, tmp / split if cfg.format != "mmap" else None,
                                      tmp if cfg.format != "arrow" else None, symbols, encoder)
                split_stats[split] = writer.run(read_files(rows, skipped, seen, bar), cfg.batch_bytes)
                if split_stats[split]["files"] == 0 and cfg.num_shards == 1:
                    raise UserError(f"the {split} split is empty: every file assigned to it was skipped "
                                    f"({skips_text(skipped)}); change --seed or the ratios")
            if cfg.format != "mmap":
                finish_dataset_dict(tmp, list(plan))
            write_dict_txt(symbols, tmp / "dict.txt")
            save_tokenizer(tok, tmp)
            stats.update(_totals(split_stats, skipped, walk))
            (tmp / "code_dataset.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            stats["files"] = sorted(p.name for p in tmp.iterdir())
    return stats


def check_shard(cfg: CodeDatasetConfig) -> None:
    if cfg.num_shards < 1:
        raise UserError(f"--num-shards {cfg.num_shards}: must be at least 1")
    if not 0 <= cfg.shard_index < cfg.num_shards:
        raise UserError(f"--shard-index {cfg.shard_index}: must be in 0..{cfg.num_shards - 1} "
                        f"(--num-shards {cfg.num_shards})")


def shard_stats(cfg: CodeDatasetConfig, plan: dict) -> dict:
    """``{"shard": {...}}`` for a sharded run (which part, and its candidate files), else nothing."""
    if cfg.num_shards == 1:
        return {}
    return {"shard": {"index": cfg.shard_index, "num_shards": cfg.num_shards,
                      "candidates": sum(len(rows) for rows in plan.values())}}


def spool_dir(out_dir: str | os.PathLike) -> Optional[Path]:
    """Where table rows are spooled: beside the output (the disk that will hold it), when that exists."""
    return next((p for p in Path(out_dir).absolute().parents if p.is_dir()), None)


def plan_splits(sources: Sequence[SourceRoot], cfg: CodeDatasetConfig, spool: Spool,
                progress: bool = False) -> tuple[WalkStats, list[SourceFile], dict]:
    """Walk the (checked) SRC directories, read the SRC tables, and assign their files to splits: (walk
    counts, files, {split: [(file, unit)]}). ``fairseq-ext code-pairs`` calls it too, so its pairs keep
    their file's split. The plan is made over every file; with shards, the plan then keeps this shard's."""
    walk = WalkStats()
    candidates = []
    for root in sources:
        if root.table is None:
            candidates += walk_sources(root.path, cfg.selection, cfg.max_bytes, walk)
            continue
        if walk.rows is None:
            walk.rows = TableStats()
        candidates += table_files(root, cfg.table, cfg.selection, cfg.max_bytes, walk, walk.rows, spool, cfg.mine,
                                  progress)
    if not candidates:
        raise UserError(f"{', '.join(str(r.path) for r in sources)}: no source file to read "
                        f"({skips_text(walk.skipped)})")
    plan = split_files(candidates, cfg.split_by, cfg.split_depth, cfg.valid_ratio, cfg.test_ratio, cfg.seed)
    if cfg.num_shards > 1:
        plan = {split: [(f, u) for f, u in rows if cfg.mine(f.size)] for split, rows in plan.items()}
    return walk, candidates, plan


def file_counts(split_stats: dict, skipped: Counter, walk: WalkStats) -> dict:
    """The counts of files every code verb reports: kept, skipped per reason, directories not walked."""
    return {
        "kept": sum(s["files"] for s in split_stats.values()),
        "skipped": {r: skipped.get(r, 0) for r in SKIP_REASONS},
        "pruned_dirs": dict(sorted(walk.pruned_dirs.items())),
        **({"table_rows": walk.rows.as_dict()} if walk.rows is not None else {}),
    }


def _totals(split_stats: dict, skipped: Counter, walk: WalkStats) -> dict:
    per_language: Counter = Counter()
    for s in split_stats.values():
        per_language.update(s["languages"])
    return {
        **file_counts(split_stats, skipped, walk),
        "kept_per_language": dict(sorted(per_language.items())),
        "tokens": sum(s["tokens"] for s in split_stats.values()),
        "splits": split_stats,
    }


def skips_text(skipped: Counter) -> str:
    parts = [f"{n} {r.replace('_', ' ')}" for r, n in sorted(skipped.items()) if n]
    return "skipped: " + (", ".join(parts) if parts else "nothing")


def read_files(rows, skipped: Counter, seen: set, bar) -> Iterator[tuple[SourceFile, str, str, str]]:
    """(file, unit, text, sha256) for each file kept, in the given order; the rest counted in ``skipped``."""
    for f, unit in rows:
        data = f.read_bytes()
        bar.update(f.size)
        reason = content_reason(data)
        digest = None
        if reason is None:
            digest = sha256_hex(data)
            key = bytes.fromhex(digest)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason is not None:
            skipped[reason] += 1
            continue
        yield f, unit, data.decode("utf-8"), digest


class _SplitWriter:
    """One split: Arrow record batches to ``OUT/SPLIT/data-00000-of-00001.arrow`` and/or ``OUT/SPLIT.bin/.idx``."""

    def __init__(self, split: str, arrow_dir: Optional[Path], mmap_dir: Optional[Path], symbols: list[str], encoder):
        from datasets.arrow_writer import ArrowWriter

        from fairseq_ext.prep.mmap_writer import MMapWriter, best_dtype

        self.split, self.encoder = split, encoder
        self.arrow = None
        if arrow_dir is not None:
            arrow_dir.mkdir()
            self.arrow = ArrowWriter(features=features(), path=str(arrow_dir / ARROW_SHARD))
        self.mmap = MMapWriter(mmap_dir / split, best_dtype(len(symbols))) if mmap_dir is not None else None
        self.stats = {"files": 0, "bytes": 0, "tokens": 0, "projects": 0, "languages": Counter()}
        self._projects: set[str] = set()

    def run(self, rows: Iterator[tuple[SourceFile, str, str, str]], batch_bytes: int, depth: int = 2) -> dict:
        """Encode up to ``depth`` batches at once (a long file holding up one batch leaves cores
        to the next), writing them in order as they finish."""
        pending: deque = deque()
        with ThreadPoolExecutor(max_workers=depth) as pool:
            for batch in file_batches(rows, batch_bytes):
                pending.append((batch, pool.submit(self.encoder.encode, [text for _f, _u, text, _d in batch])))
                if len(pending) > depth:
                    self._write(*pending.popleft())
            while pending:
                self._write(*pending.popleft())
        if self.arrow is not None:
            self.arrow.finalize()
            self.arrow.close()
        if self.mmap is not None:
            self.mmap.close()
        self.stats["projects"] = len(self._projects)
        self.stats["languages"] = dict(sorted(self.stats["languages"].items()))
        return self.stats

    def _write(self, batch: list, encoded) -> None:
        flat, lengths, _fixed = encoded.result()  # (N,) ids, (files,) lengths
        if self.arrow is not None:
            self._write_arrow(batch, flat, lengths)
        if self.mmap is not None:  # each file's ids then eos, laid end to end
            tokens = np.full(flat.size + len(lengths), self.encoder.eos, dtype=np.int64)
            tokens[np.arange(flat.size) + np.repeat(np.arange(len(lengths)), lengths)] = flat
            self.mmap.add(tokens, lengths + 1)
        self.stats["files"] += len(batch)
        self.stats["bytes"] += sum(f.size for f, *_ in batch)
        self.stats["tokens"] += int(flat.size)
        self.stats["languages"].update(f.language or "unknown" for f, *_ in batch)
        self._projects.update(u for _f, u, _t, _d in batch)

    def _write_arrow(self, batch: list, flat: np.ndarray, lengths: np.ndarray) -> None:
        import pyarrow as pa

        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        table = pa.table({
            "path": [f.rel for f, _u, _t, _d in batch], "project": [u for _f, u, _t, _d in batch],
            "language": [f.language or "unknown" for f, _u, _t, _d in batch], "sha256": [d for *_, d in batch],
            "num_bytes": pa.array([f.size for f, *_ in batch], pa.int64()),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.int32))),
            "length": pa.array(lengths.astype(np.int32)),
        })
        self.arrow.write_table(table.cast(features().arrow_schema))


def file_batches(rows: Iterator, batch_bytes: int) -> Iterator[list]:
    """Rows in batches of at most ``batch_bytes`` of source (a larger file is a batch of its own)."""
    batch, size = [], 0
    for row in rows:
        if batch and size + row[0].size > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row[0].size
    if batch:
        yield batch


