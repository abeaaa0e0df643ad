"""``prepare``: raw files -> cleaned, sentence-split train/valid/test text files."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_ext.errors import UserError
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.prep.progress import progress_bar
from fairseq_ext.prep.table_files import mixed_directory
from fairseq_ext.prep.tables import TableInput, TableOptions, TableStats, TableText, table_format
from fairseq_ext.prep.text_prep import (
    ReadStats,
    SentenceFilter,
    document_sentences,
    find_input_files,
    iter_documents,
)

DEFAULT_FILTER = SentenceFilter()


def prepare_corpus(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    valid_ratio: float = 0.01,
    test_ratio: float = 0.0,
    seed: int = 1,
    doc_sep: str = "blank-line",
    sentence_filter: Optional[SentenceFilter] = DEFAULT_FILTER,
    split_sentences: bool = True,
    pattern: str = "*",
    overwrite: bool = False,
    progress: bool = True,
    normalize: Optional[Callable[[str], str]] = None,
    table_options: Optional[TableOptions] = None,
    tables: Sequence[TableText] = (),
) -> dict:
    """Write ``train.txt``/``valid.txt`` (and ``test.txt``) to ``out_dir``; return the counts.

    ``inputs`` are text files, directories of them, or tables (JSON lines, Parquet, CSV, saved datasets: one row
    a document, read with ``table_options``); ``tables`` are more tables (a ``--dataset``), read after them.
    Documents go whole to one split, chosen by a permutation drawn from
    ``seed``: the same inputs and seed always give the same split.
    """
    _check_ratios(valid_ratio, test_ratio)
    table_stats = TableStats()
    files = _sources(inputs, pattern, replace(table_options or TableOptions(), allow_nul=True), table_stats)
    files += list(tables)
    read, kept = ReadStats(), _KeptSentences(sentence_filter)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        all_path = tmp / "all.tmp"
        with open(all_path, "w", encoding="utf-8") as out, progress_bar(len(files), progress, unit="file") as bar:
            for doc in iter_documents(_tick(files, bar), doc_sep, read):
                document = kept.of(_sentences(doc, normalize, split_sentences))
                if document:
                    out.write("\n".join(document) + "\n\n")
        _check_kept(inputs, read, kept)
        splits = _assign_splits(kept.counts["documents kept"], valid_ratio, test_ratio, seed)
        per_split = _write_splits(all_path, tmp, splits)
        all_path.unlink()
        table_stats = TableStats.total([table_stats, *(t.table.stats for t in tables)])
        stats = {
            "inputs": [str(p) for p in inputs] + [t.name for t in tables], **_read_counts(read),
            "tables": table_stats.as_dict() if any(hasattr(f, "documents") for f in files) else None,
            **kept.summary(),
            "splits": per_split, "seed": seed, "valid_ratio": valid_ratio, "test_ratio": test_ratio,
            "filter": asdict(sentence_filter) if sentence_filter else None, "doc_sep": doc_sep,
        }
        (tmp / "prepare.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def _check_kept(inputs: Sequence, read: ReadStats, kept: _KeptSentences) -> None:
    """Refuse a corpus of which nothing could be read, or nothing was kept."""
    if read.files == 0:
        skipped = ", ".join(f"{n} {why}" for why, n in read.skipped.items())
        raise UserError(f"{', '.join(map(str, inputs))}: no text to read (skipped: {skipped})")
    if kept.counts["documents kept"] == 0:
        raise UserError(f"{', '.join(map(str, inputs))}: no sentence survived cleaning and filtering")


def _sentences(doc: list[list[str]], normalize: Optional[Callable[[str], str]], split: bool) -> list[str]:
    """A document's sentences (or its lines, ``split=False``), normalized first when asked."""
    if normalize is not None:
        doc = [[normalize(line) for line in para] for para in doc]
    if split:
        return document_sentences(doc)
    return [" ".join(line.split()) for para in doc for line in para if line.strip()]


def _sources(inputs: Sequence[str | os.PathLike], pattern: str, options: TableOptions, stats: TableStats) -> list:
    """Text files (directories walked), and tables as :class:`TableText`, in the order given."""
    out: list = []
    for raw in inputs:
        if Path(raw).exists() and table_format(raw) is not None:
            out.append(TableText(TableInput(raw, {"text": options.text_key}, options, stats)))
        elif why := mixed_directory(raw):
            raise UserError(why)
        else:
            out += find_input_files([raw], pattern)
    return out


def _check_ratios(valid_ratio: float, test_ratio: float) -> None:
    for name, ratio in (("valid", valid_ratio), ("test", test_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise UserError(f"--{name}-ratio must be in [0, 1), got {ratio}")
    if valid_ratio + test_ratio >= 1.0:
        raise UserError(f"--valid-ratio + --test-ratio must be < 1, got {valid_ratio + test_ratio}")


def _read_counts(read: ReadStats) -> dict:
    return {"files_read": read.files, "files_skipped": dict(read.skipped), "bytes": read.bytes, "lines": read.lines,
            "repairs": {"invalid_utf8_sequences": read.invalid_utf8, "nul_bytes_removed": read.nul_bytes,
                        "crlf_lines": read.crlf_lines, "control_chars_replaced": read.control_chars}}


class _KeptSentences:
    """The sentences of each document that pass the filter and were not seen before (exact duplicates,
    across the whole corpus), with counts in and out: ``counts`` and the reasons in ``dropped``."""

    def __init__(self, sentence_filter: Optional[SentenceFilter]):
        self.filter = sentence_filter
        self.dedupe = sentence_filter is None or sentence_filter.dedupe
        self.seen: set[bytes] = set()
        self.dropped: Counter = Counter()
        self.counts: Counter = Counter()

    def of(self, sentences: list[str]) -> list[str]:
        """The document's sentences to keep (empty: the whole document is dropped, and counted)."""
        self.counts["documents in"] += 1
        self.counts["sentences found"] += len(sentences)
        kept = []
        for s in sentences:
            reason = self.reason(s)
            if reason:
                self.dropped[reason] += 1
            else:
                kept.append(s)
        self.counts["documents kept" if kept else "documents emptied by filtering"] += 1
        return kept

    def summary(self) -> dict:
        """The counts prepare.json records, in its order."""
        found = self.counts["sentences found"]
        return {"documents_in": self.counts["documents in"],
                "documents_emptied_by_filtering": self.counts["documents emptied by filtering"],
                "sentences_found": found, "sentences_dropped": dict(self.dropped),
                "sentences_kept": found - sum(self.dropped.values())}

    def reason(self, sentence: str) -> Optional[str]:
        """Why ``sentence`` is dropped (the filter's reason, or "duplicate"), None to keep it."""
        reason = self.filter.reason(sentence) if self.filter else None
        if reason is None and self.dedupe:
            key = hashlib.blake2b(sentence.encode("utf-8"), digest_size=12).digest()
            if key in self.seen:
                return "duplicate"
            self.seen.add(key)
        return reason


def _assign_splits(n_docs: int, valid_ratio: float, test_ratio: float, seed: int) -> np.ndarray:
    """0 train, 1 valid, 2 test for each document; at least one valid doc when asked and possible."""
    n_valid = int(round(valid_ratio * n_docs))
    n_test = int(round(test_ratio * n_docs))
    if valid_ratio > 0 and n_valid == 0 and n_docs > 1:
        n_valid = 1
    if test_ratio > 0 and n_test == 0 and n_docs > 1 + n_valid:
        n_test = 1
    too_few = (valid_ratio > 0 and n_valid == 0) or (test_ratio > 0 and n_test == 0)
    if too_few or (n_valid + n_test >= n_docs and (n_valid or n_test)):
        raise UserError(
            f"only {n_docs} document(s) kept: too few to split off validation/test data "
            "(add text, lower --valid-ratio/--test-ratio, or use --doc-sep line)"
        )
    order = np.random.default_rng(seed).permutation(n_docs)
    split = np.zeros(n_docs, dtype=np.int8)
    split[order[:n_valid]] = 1
    split[order[n_valid:n_valid + n_test]] = 2
    return split


def _write_splits(all_path: Path, out: Path, split: np.ndarray) -> dict:
    names = ["train", "valid", "test"]
    wanted = [n for i, n in enumerate(names) if i == 0 or (split == i).any()]
    handles = {n: open(out / f"{n}.txt", "w", encoding="utf-8") for n in wanted}
    per = {n: {"documents": 0, "sentences": 0} for n in wanted}
    try:
        doc = 0
        with open(all_path, encoding="utf-8") as f:
            for line in f:
                name = names[split[doc]]
                handles[name].write(line)
                if line == "\n":
                    per[name]["documents"] += 1
                    doc += 1
                else:
                    per[name]["sentences"] += 1
    finally:
        for h in handles.values():
            h.close()
    return per


def _tick(files: list[Path], bar):
    for path in files:
        yield path
        bar.update(1)
