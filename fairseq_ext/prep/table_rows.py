"""The rows of each kind of table, as ``(where, row)``: JSON lines, CSV/TSV, Parquet, saved and streamed datasets.

Each reader streams (a line, a CSV record, a Parquet row group, a dataset batch at a time) and names every
row for messages: ``file:LINE`` for JSON lines and CSV, ``file: row I`` for Parquet and datasets. A row that
does not parse is yielded as a :class:`~fairseq_ext.prep.table_files.Bad` for the table to raise or count.
The readers take the :class:`~fairseq_ext.prep.tables.TableInput` they read for (its files, options, counts).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError
from fairseq_ext.prep.table_files import (
    STREAM_ERRORS,
    Bad,
    CountingReader,
    is_stream_error,
    one_line,
    open_binary,
    stream_error,
)

PARQUET_BATCH_ROWS = 1024
MAX_CSV_FIELD = 1 << 30  # a source file in one cell can be far over csv's default 128 KiB


def jsonl_rows(table) -> Iterator[tuple[str, object]]:
    for path in table.files:
        lineno = 0
        try:
            with open_binary(path, table._readers) as f:
                for lineno, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    where = f"{path}:{lineno}"
                    try:
                        row = json.loads(raw.rstrip(b"\r\n"))
                    except UnicodeDecodeError as exc:
                        yield where, Bad(f"{where}: invalid UTF-8 at byte {exc.start}", "invalid UTF-8")
                        continue
                    except json.JSONDecodeError as exc:
                        at = "" if exc.msg.endswith(" at") else " at"
                        hint = "; JSON lines hold one object a line" if lineno == 1 and raw.strip() == b"{" else ""
                        yield where, Bad(f"{where}: malformed JSON ({exc.msg}{at} column {exc.colno}){hint}",
                                          "malformed JSON lines")
                        continue
                    yield where, row
        except UserError:
            raise
        except STREAM_ERRORS as exc:
            _truncated(table, path, exc, lineno)


def _truncated(table, path: Path, exc: BaseException, rows: int) -> None:
    """A compressed file that ended or broke after ``rows`` rows: its one line, or counted with --skip-bad-rows
    (the rest of the file is skipped). A real I/O error (an errno: a vanished file, a full disk) is raised as it is.
    Call it from the ``except`` clause."""
    if isinstance(exc, OSError) and not is_stream_error(exc):
        raise exc
    bad = stream_error(path, exc, rows)
    if not table.options.skip_bad_rows:
        raise bad from None
    table.stats.bad[bad.reason] += 1


def csv_rows(table) -> Iterator[tuple[str, object]]:
    csv.field_size_limit(MAX_CSV_FIELD)
    for path in table.files:
        delimiter = "\t" if table.format == "tsv" else ","
        with open_binary(path, table._readers) as fb:
            # utf-8-sig: Excel's "CSV UTF-8" starts with a BOM; surrogateescape: a byte that is not UTF-8
            # reaches the row's value as a lone surrogate, a bad row named by its line (skippable)
            f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            first = 1
            try:
                if reader.fieldnames is None:
                    raise UserError(f"{path}: empty, no header line")
                first = reader.line_num + 1
                for row in reader:
                    where, first = f"{path}:{first}", reader.line_num + 1  # a record may span several lines
                    if None in row:  # more fields than the header names
                        yield where, Bad(f"{where}: {len(row) - 1 + len(row[None])} fields, the header "
                                          f"names {len(reader.fieldnames)}", "malformed CSV rows")
                        continue
                    yield where, {k: v for k, v in row.items() if v is not None}
            except csv.Error as exc:
                raise UserError(f"{path}:{first}: malformed CSV ({exc})") from None
            except UserError:
                raise
            except STREAM_ERRORS as exc:
                _truncated(table, path, exc, reader.line_num)


def parquet_rows(table) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    for path in table.files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise UserError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
        wanted = columns_to_read(table, pf.schema_arrow.names, path)
        counter = CountingReader(io.BytesIO())  # progress: the row groups' share of the file
        table._readers.append(counter)
        size, total = path.stat().st_size, max(pf.metadata.num_rows, 1)
        index = 0
        for group in range(pf.num_row_groups):
            # a row group at a time: over the whole file, iter_batches pre-buffers every row group's column
            # chunks and holds them to the end, so memory would grow with the file
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted, row_groups=[group]):
                data = batch.to_pydict()
                for i in range(batch.num_rows):
                    row = {c: data[c][i] for c in wanted}
                    yield f"{path}: row {index}", row
                    index += 1
                counter.done = size * index // total


def saved_rows(table) -> Iterator[tuple[str, object]]:
    import datasets

    path = Path(table.source)
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a readable saved dataset ({one_line(exc)})") from None
    ds = pick_split(table, ds, str(path))
    yield from dataset_rows(table, ds, str(path), total_bytes=table.size)


def streamed_rows(table) -> Iterator[tuple[str, object]]:
    with hub_offline():
        ds = load_streamed(table.dataset, table.options.split)
        yield from dataset_rows(table, ds, table.source)


def columns_to_read(table, names: Optional[Sequence[str]], source) -> list[str]:
    """The top-level columns the keys need, among ``names`` (None: not known before reading, all of them); a
    column that a required key needs and the table lacks is an error naming it."""
    columns = sorted({key.split(".")[0] for key in table.keys.values()})
    if names is None:
        return columns
    for role, key in table.keys.items():
        column = key.split(".")[0]
        if column not in names and role not in table.optional:
            shown = ", ".join(sorted(names)[:10]) + (", ..." if len(names) > 10 else "")
            raise UserError(f"{source}: no column {column!r} for key {key!r} (columns: {shown})")
    return [c for c in columns if c in names]


def pick_split(table, ds, name: str):
    import datasets

    if not isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if table.options.split is not None:
            raise UserError(f"{name}: holds one Dataset, not a DatasetDict: --split {table.options.split} "
                            "does not apply")
        return ds
    splits = list(ds)
    if table.options.split is None:
        if len(splits) == 1:
            return ds[splits[0]]
        for candidate in table.options.split_candidates:
            if candidate in ds:
                return ds[candidate]
        raise UserError(f"{name}: a DatasetDict with splits {', '.join(splits)}: pick one with --split")
    if table.options.split not in ds:
        raise UserError(f"{name}: no split {table.options.split!r} (--split); it has {', '.join(splits)}")
    return ds[table.options.split]


def dataset_rows(table, ds, name: str, total_bytes: Optional[int] = None):
    wanted = columns_to_read(table, ds.column_names or None, name)  # a streamed dataset may not know them
    counter = CountingReader(io.BytesIO())
    table._readers.append(counter)
    total = getattr(ds, "num_rows", None) if total_bytes else None
    index = 0
    if hasattr(ds, "select_columns") and wanted:
        ds = ds.select_columns(wanted)
    for row in _guarded(ds, name):
        row = {c: row[c] for c in wanted if c in row}
        yield f"{name}: row {index}", row
        index += 1
        if total:
            counter.done = total_bytes * index // total
        else:  # streamed: no size known, the bar counts the text read
            counter.done += sum(len(v) for v in row.values() if isinstance(v, str))


def _guarded(ds, name: str) -> Iterator[dict]:
    """The rows of a ``datasets`` dataset; its loader's errors while reading (a JSON line it cannot parse, a
    missing file) become one line. Such an error ends the iteration, so it cannot be skipped."""
    it = iter(ds)
    index = 0
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as exc:  # pyarrow's ArrowInvalid, datasets' DatasetGenerationError, OSError, ...
            raise UserError(f"{name}: the datasets loader failed after {index:,} rows ({one_line(exc)}); name "
                            "the files with --train (or -i) instead to have the file and line of a bad row, "
                            "and --skip-bad-rows") from None
        index += 1
        yield row


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
        raise UserError(f"--dataset {name}: cannot load it offline ({one_line(exc)})") from None
