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

import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bzip2", ".xz": "xz"}
MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FORMATS = ("jsonl", "parquet", "csv", "tsv", "hf-disk")
PARQUET_BATCH_ROWS = 1024
MAX_CSV_FIELD = 1 << 30  # a source file in one cell can be far over csv's default 128 KiB


class BadRow(UserError):
    """A row (or the rest of a compressed file) that cannot be read; ``reason`` is its counter key."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


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


# --------------------------------------------------------------------------- recognising inputs

def compression_of(path: Path) -> Optional[str]:
    """``gzip`` / ``zstd`` / ``bzip2`` / ``xz`` from the file's first bytes (its suffix when unreadable), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        head = b""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return COMPRESSIONS.get(path.suffix.lower()) if not head else None


def _base_suffix(path: Path) -> str:
    """The suffix under any compression suffix: ``.jsonl`` for ``x.jsonl.zst``."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``datasets`` ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``)."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def table_format(path: str | os.PathLike) -> Optional[str]:
    """The table format of a file or directory (one of :data:`FORMATS`), or None for text.

    A directory is a table when it was written by ``save_to_disk`` or when every file in it (recursively,
    hidden files aside) is Parquet, or every one is JSON lines.
    """
    path = Path(path)
    if path.is_dir():
        if is_saved_dataset(path):
            return "hf-disk"
        kinds = {table_format(f) for f in _dir_files(path)}
        if len(kinds) == 1 and kinds <= {"parquet", "jsonl"}:
            return kinds.pop()
        return None
    suffix = _base_suffix(path)
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "jsonl" if _first_char(path) in ("{", None) else "json-array"
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PAR1":
                return "parquet"
    except OSError:
        pass
    return None


def _first_char(path: Path) -> Optional[str]:
    try:
        with _open_binary(path) as f:
            head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    except (OSError, BadRow):
        return None
    return head[:1] or None


def _dir_files(path: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def has_table_input(inputs: Sequence[str | os.PathLike]) -> bool:
    return any(table_format(p) is not None for p in inputs)


# --------------------------------------------------------------------------- opening files

class _CountingReader(io.RawIOBase):
    """Reads a file and remembers how many of its (compressed) bytes were read: the progress bar's measure."""

    def __init__(self, f):
        self.f, self.done = f, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.done += n or 0
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def _open_binary(path: Path, counter: Optional[list] = None):
    """A binary stream of ``path``, decompressed (gzip, zstd, bzip2, xz recognised from the first bytes)."""
    raw = _CountingReader(open(path, "rb"))
    if counter is not None:
        counter.append(raw)
    kind = compression_of(path)
    if kind is None:
        return io.BufferedReader(raw, 1 << 20)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=io.BufferedReader(raw), mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(io.BufferedReader(raw), mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(io.BufferedReader(raw), mode="rb")
    try:
        import zstandard
    except ImportError:  # a dependency, but a user's environment may lack it
        raise UserError(f"{path}: reading .zst files needs the zstandard package (pip install zstandard)") from None
    return io.BufferedReader(_ZstdReader(io.BufferedReader(raw, 1 << 20), zstandard), 1 << 20)


class _ZstdReader(io.RawIOBase):
    """Zstandard frames one after another, decompressed; a file that ends inside a frame is an error.

    (``zstandard``'s own ``stream_reader`` ends quietly at a truncated frame: a torn download would pass.)
    """

    def __init__(self, raw, zstandard):
        self.raw, self.zstd = raw, zstandard
        self.dobj = zstandard.ZstdDecompressor().decompressobj()
        self.pending, self.pos = memoryview(b""), 0
        self.in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.pos >= len(self.pending):
            chunk = self.raw.read(1 << 20)
            if not chunk:
                if self.in_frame:
                    raise EOFError("the file ends inside a zstd frame")
                return 0
            self._feed(chunk)
        n = min(len(b), len(self.pending) - self.pos)
        b[:n] = self.pending[self.pos:self.pos + n]
        self.pos += n
        return n

    def _feed(self, chunk: bytes) -> None:
        out = []
        while chunk:
            try:
                out.append(self.dobj.decompress(chunk))
            except self.zstd.ZstdError as exc:
                raise EOFError(f"corrupt zstd data: {exc}") from None
            self.in_frame = not self.dobj.eof
            if not self.dobj.eof:
                break
            chunk = self.dobj.unused_data  # the next frame starts here
            self.dobj = self.zstd.ZstdDecompressor().decompressobj()
            self.in_frame = bool(chunk)
        self.pending, self.pos = memoryview(b"".join(out)), 0

    def close(self) -> None:
        self.raw.close()
        super().close()


_STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, ValueError)


def _stream_error(path: Path, exc: BaseException, rows: int) -> BadRow:
    kind = compression_of(path) or "compressed"
    detail = str(exc).strip().rstrip(".") or type(exc).__name__
    return BadRow(f"{path}: {kind} data truncated or corrupt after {rows:,} rows ({detail})",
                  "truncated or corrupt files")


# --------------------------------------------------------------------------- keys

def key_value(row: Mapping, key: str):
    """``row[key]``, where a dotted key walks nested objects; KeyError naming the missing part."""
    if key in row:
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
            raise BadRow(f"{where}: {key!r} is not valid Unicode (a lone surrogate at character {exc.start})",
                         "invalid Unicode") from None
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
                self.files = _dir_files(path)
            else:
                self.files = [path]
        self._readers: list = []

    @property
    def size(self) -> Optional[int]:
        """Bytes on disk (the progress bar's total), None for a streamed ``--dataset``."""
        if self.format == "dataset":
            return None
        if self.format == "hf-disk":
            return sum(f.stat().st_size for f in _dir_files(self._split_dir()))
        return sum(f.stat().st_size for f in self.files)

    def _split_dir(self) -> Path:
        """A saved dataset's directory, or the directory of the split of a DatasetDict that will be read."""
        path = Path(self.source)
        names = [self.options.split] if self.options.split else list(self.options.split_candidates)
        return next((path / n for n in names if (path / n / "state.json").is_file()), path)

    def bytes_done(self) -> int:
        return sum(r.done for r in self._readers)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        read = {"jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv, "tsv": self._csv,
                "hf-disk": self._saved, "dataset": self._streamed}[self.format]
        for where, row in read():
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
        if isinstance(row, _Bad):
            raise row.error
        values = {}
        for role, key in self.keys.items():
            try:
                value = key_value(row, key) if isinstance(row, Mapping) else _no_object(row)
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

    # -- formats
    def _jsonl(self) -> Iterator[tuple[str, object]]:
        for path in self.files:
            lineno = 0
            try:
                with _open_binary(path, self._readers) as f:
                    for lineno, raw in enumerate(f, 1):
                        if not raw.strip():
                            continue
                        where = f"{path}:{lineno}"
                        try:
                            row = json.loads(raw.rstrip(b"\r\n"))
                        except UnicodeDecodeError as exc:
                            yield where, _Bad(f"{where}: invalid UTF-8 at byte {exc.start}", "invalid UTF-8")
                            continue
                        except json.JSONDecodeError as exc:
                            at = "" if exc.msg.endswith(" at") else " at"
                            yield where, _Bad(f"{where}: malformed JSON ({exc.msg}{at} column {exc.colno})",
                                              "malformed JSON lines")
                            continue
                        yield where, row
            except BadRow:
                raise
            except _STREAM_ERRORS as exc:
                if isinstance(exc, OSError) and not _is_stream_error(exc):
                    raise
                bad = _stream_error(path, exc, lineno)
                if not self.options.skip_bad_rows:
                    raise bad from None
                self.stats.bad[bad.reason] += 1

    def _csv(self) -> Iterator[tuple[str, object]]:
        csv.field_size_limit(MAX_CSV_FIELD)
        for path in self.files:
            delimiter = "\t" if self.format == "tsv" else ","
            with _open_binary(path, self._readers) as fb:
                f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
                reader = csv.DictReader(f, delimiter=delimiter)
                try:
                    if reader.fieldnames is None:
                        raise UserError(f"{path}: empty, no header line")
                    for row in reader:
                        where = f"{path}:{reader.line_num}"
                        if None in row:  # more fields than the header names
                            yield where, _Bad(f"{where}: {len(row) - 1 + len(row[None])} fields, the header "
                                              f"names {len(reader.fieldnames)}", "malformed CSV rows")
                            continue
                        yield where, {k: v for k, v in row.items() if v is not None}
                except UnicodeDecodeError as exc:
                    raise UserError(f"{path}:{reader.line_num + 1}: invalid UTF-8 ({exc.reason})") from None
                except csv.Error as exc:
                    raise UserError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
                except _STREAM_ERRORS as exc:
                    if isinstance(exc, OSError) and not _is_stream_error(exc):
                        raise
                    bad = _stream_error(path, exc, reader.line_num)
                    if not self.options.skip_bad_rows:
                        raise bad from None
                    self.stats.bad[bad.reason] += 1

    def _parquet(self) -> Iterator[tuple[str, object]]:
        import pyarrow.parquet as pq

        columns = sorted({key.split(".")[0] for key in self.keys.values()})
        for path in self.files:
            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises ArrowInvalid and friends
                raise UserError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
            wanted = self._columns(pf.schema_arrow.names, columns, path)
            counter = _CountingReader(io.BytesIO())  # progress: the row groups' share of the file
            self._readers.append(counter)
            size, total = path.stat().st_size, max(pf.metadata.num_rows, 1)
            index = 0
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
                data = batch.to_pydict()
                for i in range(batch.num_rows):
                    row = {c: data[c][i] for c in wanted}
                    yield f"{path}: row {index}", row
                    index += 1
                counter.done = size * index // total

    def _saved(self) -> Iterator[tuple[str, object]]:
        import datasets

        path = Path(self.source)
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise UserError(f"{path}: not a readable saved dataset ({_one_line(exc)})") from None
        ds = self._pick_split(ds, str(path))
        yield from self._dataset_rows(ds, str(path), total_bytes=self.size)

    def _streamed(self) -> Iterator[tuple[str, object]]:
        with hub_offline():
            ds = load_streamed(self.dataset, self.options.split)
            yield from self._dataset_rows(ds, self.source)

    def _columns(self, names: Sequence[str], columns: Sequence[str], source) -> list[str]:
        """The columns to read; a column that a required key needs and the table lacks is an error naming it."""
        for role, key in self.keys.items():
            column = key.split(".")[0]
            if column not in names and role not in self.optional:
                shown = ", ".join(sorted(names)[:10]) + (", ..." if len(names) > 10 else "")
                raise UserError(f"{source}: no column {column!r} for key {key!r} (columns: {shown})")
        return [c for c in columns if c in names]

    def _pick_split(self, ds, name: str):
        import datasets

        if not isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if self.options.split is not None:
                raise UserError(f"{name}: holds one Dataset, not a DatasetDict: --split {self.options.split} "
                                "does not apply")
            return ds
        splits = list(ds)
        if self.options.split is None:
            if len(splits) == 1:
                return ds[splits[0]]
            for candidate in self.options.split_candidates:
                if candidate in ds:
                    return ds[candidate]
            raise UserError(f"{name}: a DatasetDict with splits {', '.join(splits)}: pick one with --split")
        if self.options.split not in ds:
            raise UserError(f"{name}: no split {self.options.split!r} (--split); it has {', '.join(splits)}")
        return ds[self.options.split]

    def _dataset_rows(self, ds, name: str, total_bytes: Optional[int] = None):
        columns = sorted({key.split(".")[0] for key in self.keys.values()})
        wanted = self._columns(ds.column_names or columns, columns, name)
        counter = _CountingReader(io.BytesIO())
        self._readers.append(counter)
        total = getattr(ds, "num_rows", None) if total_bytes else None
        index = 0
        if hasattr(ds, "select_columns") and wanted:
            ds = ds.select_columns(wanted)
        for row in ds:
            row = {c: row[c] for c in wanted if c in row}
            yield f"{name}: row {index}", row
            index += 1
            if total:
                counter.done = total_bytes * index // total
            else:  # streamed: no size known, the bar counts the text read
                counter.done += sum(len(v) for v in row.values() if isinstance(v, str))


def _no_object(row):
    raise KeyError(None)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_stream_error(exc: OSError) -> bool:
    """Decompressors raise OSError for corrupt data (gzip's BadGzipFile, bz2's 'Invalid data stream'); a real
    I/O error (a vanished file, a full disk) has an errno."""
    return exc.errno is None


class _Bad:
    """A row that failed to parse: turned into its BadRow when its values are asked for."""

    def __init__(self, message: str, reason: str):
        self.error = BadRow(message, reason)


@contextlib.contextmanager
def hub_offline():
    """The Hugging Face hub switched off while a ``--dataset`` is resolved and read: a name that is neither a
    local builder, a local path nor in the local cache fails at once instead of reaching for the network.

    Both libraries read ``HF_HUB_OFFLINE`` once, at import, so their flags are set here and put back after.
    """
    import datasets.config
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def load_streamed(spec: dict, split: Optional[str]):
    """``datasets.load_dataset(name, config, data_files=..., split=..., streaming=True)``; call it inside
    :func:`hub_offline`."""
    import datasets

    name = spec["name"]
    kwargs = {"streaming": True, "split": split or "train"}
    if spec.get("data_files"):
        kwargs["data_files"] = spec["data_files"]
    try:
        return datasets.load_dataset(name, spec.get("config"), **kwargs)
    except Exception as exc:  # datasets raises many kinds: not found, offline, no such split
        raise UserError(f"--dataset {name}: cannot load it offline ({_one_line(exc)})") from None


def dataset_input(name: str, keys: Mapping[str, str], options: TableOptions, stats: Optional[TableStats] = None,
                  data_files: Optional[str] = None, config: Optional[str] = None) -> TableInput:
    """A ``--dataset NAME [--data-files GLOB] [--dataset-config C]`` input, streamed."""
    label = f"{name}[{options.split or 'train'}]"
    return TableInput(label, keys, options, stats,
                      dataset={"name": name, "data_files": data_files, "config": config})


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
        lines: list[str] = []
        size = 0
        done = 0
        first = 1
        rows = 0
        for _where, text in self.documents():
            rows += 1
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


def text_inputs(paths: Sequence[str | os.PathLike], options: TableOptions,
                stats: Optional[TableStats] = None) -> list:
    """Each path as a :class:`TableText` when it is a table, else the path itself (a text file or directory)."""
    out = []
    for p in paths:
        fmt = table_format(p) if Path(p).exists() else None
        out.append(TableText(TableInput(p, {"text": options.text_key}, options, stats, fmt=fmt))
                   if fmt is not None else p)
    return out
