"""Tokenizer ids straight into fairseq's mmap indexed-dataset format.

Input is text with one sentence a line and a blank line between documents.
Each sentence becomes one item ending with eos; a blank line (any run of
them) becomes one empty item, the document separator that fairseq's
``complete_doc`` sample-break mode looks for (``document_sep_len=0``). A
line longer than ``max_line_tokens`` (eos included) is cut into several
items, never dropped. Text that merely spells a special token (``<s>``,
``[CLS]``) is encoded as ordinary text, never as the special id.

Work streams in batches of lines: memory is bounded by the batch size, not
the corpus. The fast tokenizer's ``encode_batch`` spreads a batch over every
core; its output does not depend on the number of threads, so neither do
the bytes written.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_ext.prep.line_encoder import BinarizeError, LineEncoder
from fairseq_ext.prep.mmap_writer import ItemSink, MMapWriter


@dataclass
class BinarizeStats:
    """Counts for one split; ``lines_in`` = sentences + blank + empty."""

    file: str
    lines_in: int = 0
    sentences: int = 0
    blank_lines: int = 0
    documents: int = 0
    empty_after_tokenization: int = 0
    items: int = 0
    lines_split: int = 0
    tokens: int = 0
    unknown_tokens: int = 0
    special_text_fixed: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def unk_rate(self) -> float:
        return self.unknown_tokens / max(self.tokens, 1)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(unk_rate=self.unk_rate, tokens_per_second=self.tokens_per_second)
        return d


def read_line_batches(path: Path, batch_bytes: int) -> Iterator[tuple[list[str], int, int]]:
    """Yield (lines, first line number, bytes consumed) from a UTF-8 text file."""
    lineno = 1
    with open(path, "rb") as f:
        while True:
            raw = f.readlines(batch_bytes)
            if not raw:
                return
            consumed = sum(map(len, raw))
            try:
                text = b"".join(raw).decode("utf-8")
            except UnicodeDecodeError:
                for j, line in enumerate(raw):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise BinarizeError(
                            f"{path}:{lineno + j}: invalid UTF-8 at byte {exc.start} "
                            "(clean the text with `fairseq-ext prepare` first)"
                        ) from None
                raise
            if "\x00" in text:
                j = next(j for j, line in enumerate(raw) if b"\x00" in line)
                raise BinarizeError(f"{path}:{lineno + j}: NUL byte in text (clean it with `fairseq-ext prepare`)")
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            yield lines, lineno, consumed
            lineno += len(lines)


def binarize_text(
    path,
    out_prefix: str | os.PathLike,
    encoder: LineEncoder,
    dtype: np.dtype,
    batch_bytes: int = 4 << 20,
    progress: Optional[Callable[[int], None]] = None,
) -> BinarizeStats:
    """Binarize one text file (or a table input's text) to ``out_prefix.{bin,idx}`` and return its counts.

    A two-stage pipeline: a thread encodes batch k+1 while this one lays out
    and writes batch k, so the order (and the bytes) never depend on timing.
    """
    if not is_line_source(path):
        path = Path(path)
        check_text_file(path)
    if batch_bytes < 1:  # readlines(0) would read the whole file at once
        raise BinarizeError(f"--batch-mb must be > 0 (batch_bytes {batch_bytes})")
    writer = MMapWriter(out_prefix, dtype)
    try:
        stats = encode_items(path, encoder, writer, batch_bytes, progress)
        writer.close()
    except BaseException:
        writer.close()
        for suffix in (".bin", ".idx"):
            Path(str(out_prefix) + suffix).unlink(missing_ok=True)
        raise
    return stats


def encode_items(
    path,
    encoder: LineEncoder,
    sink: ItemSink,
    batch_bytes: int = 4 << 20,
    progress: Optional[Callable[[int], None]] = None,
) -> BinarizeStats:
    """Encode one text file (or a :class:`~fairseq_ext.prep.tables.TableText`) and hand its items, batch by batch,
    to ``sink.add(tokens, sizes)``.

    ``tokens`` is the batch's items laid end to end (each text item ends with
    eos; a document separator is an empty item), ``sizes`` their lengths. The
    binary writer and ``fairseq-ext encode``'s piece writer are both sinks, so
    they see exactly the same items.
    """
    if is_line_source(path):  # a table input (fairseq_ext.prep.tables.TableText): one row a document
        stats = BinarizeStats(file=path.name)
    else:
        path = Path(path)
        if not path.is_file():
            raise BinarizeError(f"{path}: no such file")
        stats = BinarizeStats(file=str(path))
    start = time.perf_counter()
    with _gc_paused(), ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for texts, is_sep, consumed in _classified_batches(path, batch_bytes, stats):
            sentences = [texts[i] for i in np.flatnonzero(~is_sep)] if is_sep.any() else texts
            encoded = pool.submit(encoder.encode, sentences)
            if pending is not None:
                _write_batch(*pending, encoder, sink, stats, progress)
            pending = (encoded, is_sep, consumed)
        if pending is not None:
            _write_batch(*pending, encoder, sink, stats, progress)
    stats.documents = stats.documents + (1 if stats.items else 0)
    stats.seconds = time.perf_counter() - start
    table = getattr(path, "table", None)  # a table's text, or one shard's part of it: the rows read and skipped
    if table is not None:
        stats.extra.update(table.stats.as_dict())
    return stats


def check_text_file(path: Path, option: str = "") -> None:
    """A readable, non-empty regular file, or a BinarizeError naming it (and the option, e.g. ``--train``)."""
    where = f" ({option})" if option else ""
    if path.is_dir():
        raise BinarizeError(f"{path}: is a directory, not a text file{where}")
    if not path.is_file():
        raise BinarizeError(f"{path}: no such file{where}")
    if path.stat().st_size == 0:
        raise BinarizeError(f"{path}: file is empty{where}")


def is_line_source(source) -> bool:
    """A source that gives its own line batches (a table input's text, :class:`fairseq_ext.prep.tables.TableText`,
    or one shard's part of an input, :class:`fairseq_ext.prep.shard_parts.DealtText`) rather than a text file's path."""
    return hasattr(source, "line_batches")


def source_line_batches(source, batch_bytes: int) -> Iterator[tuple[list[str], int, int]]:
    """``(lines, first line or row number, bytes consumed)`` of a text file's path or of a line source."""
    return source.line_batches(batch_bytes) if is_line_source(source) else read_line_batches(Path(source), batch_bytes)


def source_size(source) -> Optional[int]:
    """Bytes on disk of a text file or a line source (the progress bar's total); None when unknown (streamed)."""
    return source.size if is_line_source(source) else Path(source).stat().st_size


@contextlib.contextmanager
def _gc_paused():
    """Millions of small id lists make the cyclic GC run constantly; none of them form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _classified_batches(path: Path, batch_bytes: int, stats: BinarizeStats):
    """Yield (texts, is_sep, bytes consumed): sentences and one "" per document boundary.

    Runs of blank lines collapse into one boundary; none is emitted before the
    first sentence or after the last, across batch edges too.
    """
    in_doc = False  # a sentence was seen since the last boundary
    pending_sep = False
    for lines, _first, consumed in source_line_batches(path, batch_bytes):
        stats.lines_in += len(lines)
        blank = [not line.strip() for line in lines]
        if not pending_sep and not any(blank):  # the common case: no document boundary in this batch
            in_doc = in_doc or bool(lines)
            yield lines, np.zeros(len(lines), dtype=bool), consumed
            continue
        texts: list[str] = []
        is_sep: list[bool] = []
        for line, is_blank in zip(lines, blank):
            if not is_blank:
                if pending_sep:
                    texts.append("")
                    is_sep.append(True)
                    pending_sep = False
                texts.append(line)
                is_sep.append(False)
                in_doc = True
            else:
                stats.blank_lines += 1
                pending_sep = pending_sep or in_doc
                in_doc = False
        yield texts, np.array(is_sep, dtype=bool), consumed


def _write_batch(encoded: Future, is_sep: np.ndarray, consumed: int, encoder: LineEncoder, writer: ItemSink,
                 stats: BinarizeStats, progress: Optional[Callable[[int], None]]) -> None:
    flat, sent_lengths, fixed = encoded.result()
    lengths = np.zeros(len(is_sep), dtype=np.int64)
    lengths[~is_sep] = sent_lengths
    tokens, sizes, cut = encoder.items(flat, lengths, is_sep)
    writer.add(tokens, sizes)
    stats.sentences += len(sent_lengths)
    stats.empty_after_tokenization += int((sent_lengths == 0).sum())
    stats.documents += int(is_sep.sum())
    stats.items += len(sizes)
    stats.lines_split += cut
    stats.tokens += int(tokens.size)
    stats.special_text_fixed += fixed
    if encoder.unk is not None:
        stats.unknown_tokens += int(np.count_nonzero(flat == encoder.unk))
    if progress is not None:
        progress(consumed)
