"""Source trees -> a ``datasets.DatasetDict`` of (query, key) pairs for contrastive code search.

The files are walked, selected, split and read exactly as ``fairseq-ext
code-dataset`` does (:func:`fairseq_ext.prep.code_dataset.plan_splits` and
:func:`~fairseq_ext.prep.code_dataset.read_files`: same skips, same dedupe),
so a pair is in the split its file is in there. Each kept file gives docstring
pairs (Python) and/or span pairs (:mod:`fairseq_ext.prep.code_pair_extract`);
they are encoded batch by batch with the tokenizer and streamed to
``OUT/SPLIT/data-00000-of-00001.arrow``. Rows: one per pair, files in path
order, within a file the docstring pairs in source order, then the spans.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fairseq_ext.errors import UserError
from fairseq_ext.io_utils import atomic_output_dir, check_output_dir
from fairseq_ext.prep.arrow_dataset_dict import ARROW_SHARD, finish_dataset_dict
from fairseq_ext.prep.code_dataset import (
    CodeDatasetConfig,
    file_batches,
    file_counts,
    plan_splits,
    read_files,
    skips_text,
    spool_dir,
)
from fairseq_ext.prep.code_pair_extract import (
    DOCSTRING_SKIPS,
    SPAN_SKIPS,
    Pair,
    docstring_pairs,
    source_lines,
    span_pairs,
    span_seed,
)
from fairseq_ext.prep.code_sources import check_sources
from fairseq_ext.prep.code_tables import Spool
from fairseq_ext.prep.progress import progress_bar
from fairseq_ext.vocab.tokenizer import FALLBACK_MASK_TOKEN

KINDS = ("docstring", "span", "both")
# Why a file gives no pair of a kind (besides code-dataset's reasons, which drop it for every kind).
FILE_SKIPS = {"docstring": ("not_python", "unparsable"), "span": ("too_few_lines", "mask_token_in_file")}


@dataclass
class CodePairsConfig:
    data: CodeDatasetConfig  # tokenizer, split, selection, reading: as code-dataset
    kind: str = "both"
    min_query_words: int = 3
    max_key_tokens: int = 512
    mask_token: str | None = None
    span_lines: tuple[int, int] = (3, 15)
    spans_per_file: int = 1
    kinds: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"--kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        lo, hi = self.span_lines
        if not 1 <= lo <= hi:
            raise UserError(f"--span-lines {lo},{hi}: need 1 <= MIN <= MAX")
        self.kinds = ("docstring", "span") if self.kind == "both" else (self.kind,)


def features():
    import datasets

    ids = datasets.List(datasets.Value("int32")) if hasattr(datasets, "List") else \
        datasets.Sequence(datasets.Value("int32"))
    text = datasets.Value("string")
    return datasets.Features({
        "path": text, "project": text, "language": text, "kind": text, "name": text, "query": text, "key": text,
        "query_ids": ids, "key_ids": ids, "query_length": datasets.Value("int32"),
        "key_length": datasets.Value("int32"),
    })


def resolve_mask_token(tok, name: str | None, source: str) -> tuple[str, int]:
    """(text, id) of the mask: ``name`` (--mask-token), else the tokenizer's mask, else <extra_id_0>."""
    vocab = tok.get_vocab()
    if name is not None:
        if name not in vocab:
            raise UserError(f"--mask-token {name!r}: no such token in {source}")
    elif getattr(tok, "mask_token", None):
        name = tok.mask_token
    elif FALLBACK_MASK_TOKEN in vocab:
        name = FALLBACK_MASK_TOKEN
    else:
        raise UserError(f"{source}: tokenizer has no mask token and no {FALLBACK_MASK_TOKEN}; "
                        "name one of its tokens with --mask-token TOKEN")
    return name, int(vocab[name])


def build_code_pairs(srcs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, cfg: CodePairsConfig,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Write the pairs directory ``out_dir``; return (and write to ``code_pairs.json``) every count."""
    from fairseq_ext.prep.binarize_dir import load_line_encoder
    from fairseq_ext.vocab.dict_txt import write_dict_txt
    from fairseq_ext.vocab.tokenizer import save_tokenizer

    sources = check_sources(srcs)
    check_output_dir(out_dir, overwrite)
    tok, symbols, encoder = load_line_encoder(cfg.data.tokenizer, 2)
    mask = resolve_mask_token(tok, cfg.mask_token, str(cfg.data.tokenizer)) if "span" in cfg.kinds else (None, -1)
    with Spool(spool_dir(out_dir)) as spool:
        walk, candidates, plan = plan_splits(sources, cfg.data, spool, progress)
        d = cfg.data
        stats = {
            "sources": [str(s) for s in srcs], "tokenizer": str(d.tokenizer), "vocab_size": len(symbols),
            "kind": cfg.kind, "split_by": d.split_by, "split_depth": d.split_depth, "seed": d.seed,
            "valid_ratio": d.valid_ratio, "test_ratio": d.test_ratio, "max_bytes": d.max_bytes,
            "languages": sorted(d.selection.languages) if d.selection.languages else None,
            "min_query_words": cfg.min_query_words, "max_key_tokens": cfg.max_key_tokens,
            "mask_token": mask[0], "mask_id": mask[1], "span_lines": list(cfg.span_lines),
            "spans_per_file": cfg.spans_per_file, "files_seen": walk.files_seen, "candidates": len(candidates),
        }
        skipped: Counter = Counter(walk.skipped)
        counts = {k: {"files_skipped": Counter(), "pairs_skipped": Counter()} for k in cfg.kinds}
        seen: set[bytes] = set()
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, \
                progress_bar(sum(f.size for rows in plan.values() for f, _u in rows), progress) as bar:
            splits = {}
            for split, rows in plan.items():
                bar.set_description(split)
                writer = _PairWriter(tmp / split, cfg, encoder, mask, counts)
                for batch in file_batches(read_files(rows, skipped, seen, bar), d.batch_bytes):
                    writer.add(batch)
                splits[split] = writer.close()
                if splits[split]["pairs"] == 0:
                    raise UserError(f"the {split} split has no pair: its {splits[split]['files']} file(s) gave none "
                                    f"({skips_text(skipped)}); change --seed, the ratios or --kind")
            finish_dataset_dict(tmp, list(plan))
            write_dict_txt(symbols, tmp / "dict.txt")
            save_tokenizer(tok, tmp)
            stats.update(_totals(splits, skipped, walk, counts, cfg.kinds))
            (tmp / "code_pairs.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            stats["files"] = sorted(p.name for p in tmp.iterdir())
    return stats


def _totals(splits: dict, skipped: Counter, walk, counts: dict, kinds: tuple[str, ...]) -> dict:
    out = {
        **file_counts(splits, skipped, walk),
        "pairs": sum(s["pairs"] for s in splits.values()),
        "splits": splits,
    }
    for kind in kinds:
        pair_reasons = (DOCSTRING_SKIPS if kind == "docstring" else SPAN_SKIPS) + ("key_too_long",)
        out[kind] = {
            "pairs": sum(s["pairs_per_kind"][kind] for s in splits.values()),
            "files_skipped": {r: counts[kind]["files_skipped"].get(r, 0) for r in FILE_SKIPS[kind]},
            "pairs_skipped": {r: counts[kind]["pairs_skipped"].get(r, 0) for r in pair_reasons},
        }
    return out


class _PairWriter:
    """One split: the pairs of each batch of files, encoded, to ``OUT/SPLIT/data-00000-of-00001.arrow``."""

    def __init__(self, directory, cfg: CodePairsConfig, encoder, mask: tuple, counts: dict):
        from datasets.arrow_writer import ArrowWriter

        directory.mkdir()
        self.arrow = ArrowWriter(features=features(), path=str(directory / ARROW_SHARD))
        self.cfg, self.encoder, self.mask, self.counts = cfg, encoder, mask, counts
        self.stats = {"files": 0, "projects": 0, "pairs": 0, "pairs_per_kind": dict.fromkeys(cfg.kinds, 0),
                      "query_tokens": 0, "key_tokens": 0}
        self._projects: set[str] = set()

    def add(self, batch: list) -> None:
        rows = [(f, unit, pair) for f, unit, text, digest in batch for pair in self._pairs(f, text, digest)]
        self.stats["files"] += len(batch)
        self._projects.update(unit for _f, unit, _t, _d in batch)
        if rows:
            self._write(rows)

    def _pairs(self, f, text: str, digest: str) -> list[Pair]:
        cfg, pairs = self.cfg, []
        if "docstring" in cfg.kinds:
            skips = self.counts["docstring"]
            if f.language != "python":
                skips["files_skipped"]["not_python"] += 1
            else:
                try:
                    pairs += docstring_pairs(text, cfg.min_query_words, skips["pairs_skipped"])
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    skips["files_skipped"]["unparsable"] += 1
        if "span" in cfg.kinds:
            skips = self.counts["span"]
            lo, hi = cfg.span_lines
            if self.mask[0] in text:  # the query's text would hold two masks
                skips["files_skipped"]["mask_token_in_file"] += 1
            elif len(source_lines(text)) < 2 * lo:  # a span is at most half the file
                skips["files_skipped"]["too_few_lines"] += 1
            else:
                pairs += span_pairs(text, lo, hi, cfg.spans_per_file, span_seed(cfg.data.seed, digest),
                                    skips["pairs_skipped"], self.mask[0])
        return pairs

    def _write(self, rows: list) -> None:
        import pyarrow as pa

        texts = []  # docstring: query, key; span: prefix, suffix, key (the mask id goes between prefix and suffix)
        for _f, _u, p in rows:
            texts += [p.query, p.key] if p.kind == "docstring" else [p.prefix, p.suffix, p.key]
        flat, lengths, _repaired = self.encoder.encode(texts)
        pieces = np.split(flat.astype(np.int32), np.cumsum(lengths)[:-1])
        mask_id = np.array([self.mask[1]], dtype=np.int32)
        kept, queries, keys, k = [], [], [], 0
        for row in rows:
            if row[2].kind == "docstring":
                query, key = pieces[k], pieces[k + 1]
                k += 2
            else:
                query, key = np.concatenate([pieces[k], mask_id, pieces[k + 1]]), pieces[k + 2]
                k += 3
            if key.size > self.cfg.max_key_tokens:
                self.counts[row[2].kind]["pairs_skipped"]["key_too_long"] += 1
                continue
            kept.append(row)
            queries.append(query)
            keys.append(key)
        if not kept:
            return
        q_len = np.fromiter(map(len, queries), dtype=np.int32, count=len(kept))
        k_len = np.fromiter(map(len, keys), dtype=np.int32, count=len(kept))
        table = pa.table({
            "path": [f.rel for f, _u, _p in kept], "project": [u for _f, u, _p in kept],
            "language": [f.language or "unknown" for f, _u, _p in kept], "kind": [p.kind for *_, p in kept],
            "name": [p.name for *_, p in kept], "query": [p.query for *_, p in kept], "key": [p.key for *_, p in kept],
            "query_ids": _list_array(queries, q_len), "key_ids": _list_array(keys, k_len),
            "query_length": pa.array(q_len), "key_length": pa.array(k_len),
        })
        self.arrow.write_table(table.cast(features().arrow_schema))
        self.stats["pairs"] += len(kept)
        self.stats["query_tokens"] += int(q_len.sum())
        self.stats["key_tokens"] += int(k_len.sum())
        for *_, p in kept:
            self.stats["pairs_per_kind"][p.kind] += 1

    def close(self) -> dict:
        self.arrow.finalize()
        self.arrow.close()
        self.stats["projects"] = len(self._projects)
        return self.stats


def _list_array(arrays: list[np.ndarray], lengths: np.ndarray):
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(arrays).astype(np.int32)))
