"""Corpora as people have them: JSON lines, Parquet, CSV/TSV and Hugging Face datasets, one row a document.

A *table input* is recognised from its name and contents (:func:`table_format`):

  ``x.jsonl`` ``x.ndjson`` ``x.json`` (one object a line)   JSON lines, plain or ``.gz`` ``.zst`` ``.bz2`` ``.xz``
  ``x.parquet``, or a directory of them                     Parquet (read a row group at a time)
  ``x.csv`` ``x.tsv`` (a header line; compressed too)        CSV/TSV
  a directory written by ``datasets.save_to_disk``          a ``Dataset``, or one split of a ``DatasetDict``
  ``--dataset NAME [--data-files GLOB]``                    ``datasets.load_dataset(..., streaming=True)``, offline

Rows are streamed: memory stays flat whatever the size of the corpus. A key
is a column name or a dotted path into nested objects (``meta.text``).

A row that cannot be read (no such key, a value that is not a string, a
malformed JSON line, text that is not valid Unicode) stops the program with
one line naming the file, the row (line number for JSON lines and CSV, row
index for Parquet and datasets) and what is wrong; with ``skip_bad_rows``
it is skipped and counted instead (``TableStats.bad``). A truncated or corrupt
compressed file is the same: with ``skip_bad_rows`` the rest of that file is
skipped and counted.

For the text verbs a row is one document: :meth:`TableText.line_batches` gives
its lines, then a blank line, exactly what a text file holding the same
documents gives, so ``binarize`` writes the same bytes from either.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError
from fairseq_ext.prep.table_files import (
    FORMATS,
    Bad,
    BadRow,
    dir_files,
    table_format,
)
from fairseq_ext.prep.table_rows import (
    csv_rows,
    jsonl_rows,
    parquet_rows,
    saved_rows,
    streamed_rows,
)

__all__ = ["BadRow", "TableInput", "TableOptions", "TableStats", "TableText", "table_format"]


@dataclass
class TableOptions:
    """How rows are read: which key holds the text, which split, and whether bad rows stop the program."""

    text_key: str = "text"
    split: Optional[str] = None
    skip_bad_rows: bool = False
    # without --split, the split of a DatasetDict to read: the first of these it has (binarize --valid: validation)
    split_candidates: tuple[str, ...] = ()
    # prepare repairs text (removes NUL and counts it); binarize takes text as it is and refuses NUL
    allow_nul: bool = False


@dataclass
class TableStats:
    """Rows read and rows skipped (reason -> count) over one or more table inputs."""

    rows: int = 0
    bad: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        """``1,000 rows`` or ``1,000 rows, 2 skipped (1 malformed JSON, 1 missing key)``."""
        skipped = sum(self.bad.values())
        text = f"{self.rows:,} rows"
        if skipped:
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.bad.items()))
            text += f", {skipped:,} skipped ({why})"
        return text

    def as_dict(self) -> dict:
        return {"rows": self.rows, "rows_skipped": dict(sorted(self.bad.items()))}

    @classmethod
    def total(cls, parts) -> TableStats:
        out = cls()
        for part in parts:
            out.rows += part.rows
            out.bad.update(part.bad)
        return out


# --------------------------------------------------------------------------- keys

def key_value(row: Mapping, key: str):
    """``row[key]``, where a dotted key walks nested objects; KeyError naming the missing part, and for a row that
    is no object (a JSON list or string)."""
    if isinstance(row, Mapping) and key in row:
        return row[key]
    value = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(part)
        value = value[part]
    return value


def _keys_hint(row) -> str:
    if not isinstance(row, Mapping):
        return f"the row is a JSON {type(row).__name__}, not an object"
    keys = list(row)
    shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
    return f"keys: {shown}" if keys else "the row is empty"


def _check_text(value, key: str, where: str, allow_nul: bool = False) -> str:
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise BadRow(f"{where}: {key!r} is {kind}, not a string", "values not a string")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRow(f"{where}: {key!r} is not valid Unicode (a byte that is not UTF-8, or a lone surrogate, "
                         f"at character {exc.start})", "invalid Unicode") from None
    if not allow_nul and "\x00" in value:
        raise BadRow(f"{where}: {key!r} holds a NUL character", "NUL characters")
    return value


# --------------------------------------------------------------------------- reading rows

class TableInput:
    """One table input (a file, a directory of Parquet/JSONL files, a saved dataset, or a ``--dataset``).

    Iterating gives ``(where, values)``: ``where`` names the row for messages (``file:LINE`` or ``file: row I``),
    ``values`` maps each role of ``keys`` ({role: key}) to its string. Bad rows raise :class:`BadRow`, or with
    ``options.skip_bad_rows`` are counted in ``stats.bad`` and skipped. ``optional`` roles may be missing (None).
    """

    def __init__(self, source: str | os.PathLike, keys: Mapping[str, str], options: TableOptions,
                 stats: Optional[TableStats] = None, fmt: Optional[str] = None,
                 files: Optional[Sequence[Path]] = None, optional: Sequence[str] = (),
                 dataset: Optional[dict] = None):
        self.source = str(source)
        self.keys = dict(keys)
        self.optional = set(optional)
        self.options = options
        self.stats = stats if stats is not None else TableStats()
        self.dataset = dataset
        if dataset is not None:
            self.format = "dataset"
            self.files: list[Path] = []
        elif fmt is not None and files is not None and not Path(source).exists():  # --dataset json --data-files
            self.format, self.files = fmt, list(files)
        else:
            path = Path(source)
            if not path.exists():
                raise UserError(f"{path}: no such file or directory")
            self.format = fmt or table_format(path)
            if self.format == "json-array":
                raise UserError(f"{path}: a JSON array, not JSON lines; write one object a line (.jsonl)")
            if self.format not in FORMATS:
                raise UserError(f"{path}: not a table (JSON lines, Parquet, CSV/TSV or a saved dataset)")
            if files is not None:
                self.files = list(files)
            elif path.is_dir() and self.format != "hf-disk":
                self.files = dir_files(path)
            else:
                self.files = [path]
        self._readers: list = []

    @property
    def size(self) -> Optional[int]:
        """Bytes on disk (the progress bar's total), None for a streamed ``--dataset``."""
        if self.format == "dataset":
            return None
        if self.format == "hf-disk":
            return sum(f.stat().st_size for f in dir_files(self._split_dir()))
        return sum(f.stat().st_size for f in self.files)

    def _split_dir(self) -> Path:
        """A saved dataset's directory, or the directory of the split of a DatasetDict that will be read."""
        path = Path(self.source)
        names = [self.options.split] if self.options.split else list(self.options.split_candidates)
        return next((path / n for n in names if (path / n / "state.json").is_file()), path)

    def bytes_done(self) -> int:
        return sum(r.done for r in self._readers)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        read = {"jsonl": jsonl_rows, "parquet": parquet_rows, "csv": csv_rows, "tsv": csv_rows,
                "hf-disk": saved_rows, "dataset": streamed_rows}[self.format]
        for where, row in read(self):
            try:
                values = self._values(row, where)
            except BadRow as bad:
                if not self.options.skip_bad_rows:
                    raise
                self.stats.bad[bad.reason] += 1
                continue
            self.stats.rows += 1
            yield where, values

    def _values(self, row, where: str) -> dict:
        if isinstance(row, Bad):
            raise row.error
        values = {}
        for role, key in self.keys.items():
            try:
                value = key_value(row, key)
            except KeyError:
                if role in self.optional:
                    values[role] = None
                    continue
                raise BadRow(f"{where}: no key {key!r} ({_keys_hint(row)})", "rows without the key") from None
            if value is None and role in self.optional:
                values[role] = None
                continue
            values[role] = _check_text(value, key, where, self.options.allow_nul)
        return values


# --------------------------------------------------------------------------- rows as text

class TableText:
    """The text of a table input as the text verbs read it: each row's lines, then a blank line.

    ``line_batches`` yields ``(lines, first row number, bytes consumed)`` as
    :func:`fairseq_ext.prep.binarizer.read_line_batches` yields them from a text file.
    """

    def __init__(self, table: TableInput):
        self.table = table
        self.name = table.source

    def __str__(self) -> str:
        return self.name

    @property
    def size(self) -> Optional[int]:
        return self.table.size

    def documents(self) -> Iterator[tuple[str, str]]:
        """``(where, text)`` of each row, ``\\r\\n`` turned into ``\\n``."""
        for where, values in self.table:
            text = values["text"]
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            yield where, text

    def line_batches(self, batch_bytes: int) -> Iterator[tuple[list[str], int, int]]:
        """Batches of about ``batch_bytes`` of text (``len`` of the lines), cut between lines as a text file's
        are, inside a row too: a batch is never more than ``batch_bytes`` and one line, however long a document
        is (the row itself is in memory once, its lines are not held twice)."""
        lines: list[str] = []
        size = 0
        done = 0
        first = 1  # the row the batch's first line belongs to
        rows = 0
        for _where, text in self.documents():
            rows += 1
            while size + len(text) >= batch_bytes:
                cut = text.find("\n", max(batch_bytes - size - 1, 0))
                if cut < 0:  # the rest of the row is one line: it ends the batch
                    break
                lines.extend(text[:cut].split("\n"))
                text = text[cut + 1:]
                now = self.table.bytes_done()
                yield lines, first, now - done
                done, first, lines, size = now, rows, [], 0
            lines.extend(text.split("\n"))
            lines.append("")
            size += len(text) + 1
            if size >= batch_bytes:
                now = self.table.bytes_done()
                yield lines, first, now - done
                done, first, lines, size = now, rows + 1, [], 0
        if lines:
            now = self.table.bytes_done()
            yield lines, first, now - done


