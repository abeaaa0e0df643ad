"""One of N parts of the training input, for one task of a Slurm array (``binarize --num-shards N --shard-index K``).

N tasks, on as many nodes, each write one data directory ``DIR/shardK``. Together they hold exactly
the training documents of one run, each in exactly one part, and which part a document goes to
depends on the input alone (never on timing, batch sizes or which task ran first), so any task can
be rerun by itself. Two rules, the first that applies:

* **files**: a table input of several files (a directory of JSON lines or Parquet files) with at
  least N of them: file i of the sorted list goes to part i mod N, and a task reads only its files;
* **documents**: otherwise a document goes to part ``document_part(number, N)``, a hash of its
  number in the input (blake2b: the same on every machine and every run, unlike Python's salted
  ``hash()``); every task reads the whole input but tokenizes only its own documents.

A document is what the binarizer counts as one, a run of non-blank lines (a table's row comes as its
lines and a blank line), so one filter on lines serves text files and tables alike. Validation and
test data go to part 0 only, as with ``--shards``.

>>> [document_part(i, 3) for i in range(10)]
[0, 1, 2, 0, 1, 0, 1, 0, 2, 2]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from fairseq_ext.prep.binarizer import source_line_batches, source_size
from fairseq_ext.prep.line_encoder import BinarizeError
from fairseq_ext.prep.shards import data_path, shard_dirs
from fairseq_ext.prep.tables import TableInput, TableText

FILE_FORMATS = ("jsonl", "parquet", "csv", "tsv")  # tables whose files can be read apart (TableInput.files)
RULES = {
    "files": "whole files dealt in sorted order (file i to shard i mod {n})",
    "documents": "documents dealt by a hash of their number in the input (blake2b, mod {n})",
}


def document_part(number: int, num_shards: int) -> int:
    """The part (0 .. num_shards - 1) of the document numbered ``number`` (from 0) in the input."""
    digest = hashlib.blake2b(number.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


class ShardPart:
    """Part ``index`` of ``num_shards``: which inputs it reads, and the counts of what it kept."""

    def __init__(self, num_shards: int, index: int):
        if num_shards < 1:
            raise BinarizeError(f"--num-shards must be at least 1, got {num_shards}")
        if not 0 <= index < num_shards:
            raise BinarizeError(f"--shard-index {index}: must be from 0 to {num_shards - 1} (--num-shards "
                                f"{num_shards})")
        self.num_shards, self.index = num_shards, index
        self.rule = "documents"
        self.total = 0  # documents, or files, of the whole training input
        self.kept = 0  # of them in this part
        self.files: list[str] = []  # the files rule: this part's files
        self.elsewhere: list[str] = []  # splits given but written by part 0 only (validation, test)

    def directory(self, root: str | os.PathLike) -> Path:
        """``root/shardK``, the directory this part writes (the others write theirs beside it)."""
        return shard_dirs(root, self.num_shards)[self.index]

    def check_siblings(self, root: str | os.PathLike) -> None:
        """Refuse to write beside parts of another split of the input: ``root/shardJ`` written with another
        ``--num-shards`` (a rerun of some tasks of an array with a smaller array) would hold documents twice."""
        import json

        for directory in sorted(Path(root).glob("shard*")):
            try:
                recorded = json.loads((directory / "binarize.json").read_text(encoding="utf-8")).get("num_shards")
            except (OSError, ValueError):
                continue  # not a part (or not complete): nothing to compare with
            if recorded is not None and recorded != self.num_shards:
                raise BinarizeError(
                    f"{directory}: written as one of {recorded} parts, and this run is --num-shards "
                    f"{self.num_shards}: together they would hold documents twice; rerun with --num-shards "
                    f"{recorded} (scripts/slurm/binarize_array.sbatch: NUM_SHARDS={recorded}) or write to another -o")

    def select(self, inputs: Mapping[str, object]) -> dict:
        """``{split: input}`` for this part: the training input narrowed to it; validation and test in part 0 only."""
        self.elsewhere = [split for split in inputs if split != "train" and self.index != 0]
        return {split: self._train(source) if split == "train" else source
                for split, source in inputs.items() if split not in self.elsewhere}

    def _train(self, source):
        table = getattr(source, "table", None)
        if table is not None and table.format in FILE_FORMATS and len(table.files) >= self.num_shards:
            self.rule = "files"
            ordered = sorted(table.files)
            mine = ordered[self.index :: self.num_shards]
            self.total, self.kept, self.files = len(ordered), len(mine), [str(f) for f in mine]
            return TableText(TableInput(table.source, table.keys, table.options, table.stats, fmt=table.format,
                                        files=mine, optional=sorted(table.optional)))
        return DealtText(source, self)

    def as_dict(self, root: str | os.PathLike) -> dict:
        """What ``binarize.json`` records: the part, the rule, its counts and the data path of all the parts."""
        counts = {"total": self.total, "kept": self.kept, **({"paths": self.files} if self.rule == "files" else {})}
        return {"num_shards": self.num_shards, "shard_index": self.index, "rule": self.rule, self.rule: counts,
                "data_path": data_path(shard_dirs(root, self.num_shards))}

    def describe(self) -> str:
        """One line: which rule dealt the input, and how much of it this part holds."""
        rule = RULES[self.rule].format(n=self.num_shards)
        where = f"; {' and '.join(self.elsewhere)} in shard 0 only" if self.elsewhere else ""
        return (f"shard {self.index} of {self.num_shards} (--shard-index {self.index}): {rule}; "
                f"{self.kept:,} of {self.total:,} {self.rule}{where}")


class DealtText:
    """The lines of the documents that fall to one part, read from a text file or a table's text.

    ``line_batches`` gives them as :func:`~fairseq_ext.prep.binarizer.read_line_batches` gives a file's
    lines, a blank line after each document kept, so the binarizer sees the documents of this part alone.
    """

    def __init__(self, source, part: ShardPart):
        self.source, self.part = source, part
        if hasattr(source, "table"):  # a table's rows read (and skipped) are reported, as for the whole table
            self.table = source.table
        self.name = str(source)
        self.size = source_size(source)

    def __str__(self) -> str:
        return self.name

    def line_batches(self, batch_bytes: int) -> Iterator[tuple[list[str], int, int]]:
        batches = source_line_batches(self.source, batch_bytes)
        part, n = self.part, self.part.num_shards
        in_doc = keep = False
        unreported = 0  # bytes read for batches that kept no line: told with the next batch that does
        for lines, first, consumed in batches:
            kept = []
            for line in lines:
                if line.strip():
                    if not in_doc:  # a document starts
                        in_doc, keep = True, document_part(part.total, n) == part.index
                        part.total += 1
                        part.kept += keep
                    if keep:
                        kept.append(line)
                elif in_doc:
                    if keep:
                        kept.append("")
                    in_doc = False
            unreported += consumed
            if kept:
                yield kept, first, unreported
                unreported = 0
        if part.total and not part.kept:
            raise BinarizeError(f"{self.name}: none of its {part.total:,} documents falls to shard {part.index} of "
                                f"{n} (documents are dealt by a hash of their number); use fewer shards")
