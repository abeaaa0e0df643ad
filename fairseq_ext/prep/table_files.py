"""Table files on disk: recognising a table from its name and first bytes, and opening it decompressed.

Compressed files (gzip, zstd, bzip2, xz) are recognised from their first bytes, whatever their name; a
truncated or corrupt one becomes a :class:`BadRow` (counted under ``truncated or corrupt files``) naming the
file and the rows read before. Readers count the bytes they read from disk: the progress bar's measure.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bzip2", ".xz": "xz"}
MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FORMATS = ("jsonl", "parquet", "csv", "tsv", "hf-disk")


class BadRow(UserError):
    """A row (or the rest of a compressed file) that cannot be read; ``reason`` is its counter key."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


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

    A directory is a table when it was written by ``save_to_disk`` or when every file in it (recursively;
    hidden files, empty files and ``_``-names such as Spark's ``_SUCCESS`` aside) is Parquet, or every one is
    JSON lines. A compressed file whose name says nothing (``x.gz.part``) is JSON lines when it starts with
    ``{`` once decompressed.
    """
    path = Path(path)
    if path.is_dir():
        if is_saved_dataset(path):
            return "hf-disk"
        kinds = set()
        for f in dir_files(path):  # stops at the first file that is no table, or of a second kind
            kinds.add(table_format(f))
            if not kinds <= {"parquet"} and not kinds <= {"jsonl"}:
                return None
        return kinds.pop() if kinds else None
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
    if compression_of(path) is not None and _first_char(path) == "{":
        return "jsonl"
    return None


def mixed_directory(path: str | os.PathLike) -> Optional[str]:
    """For a directory that is not a table but holds tables beside other files: the one-line reason it cannot
    be read (as text it would read the tables' raw JSON or bytes); None otherwise."""
    path = Path(path)
    if not path.is_dir() or is_saved_dataset(path):
        return None
    files = dir_files(path)
    kinds = {f: table_format(f) for f in files}
    tables = [f for f, k in kinds.items() if k is not None]
    if not tables or len(tables) == len(files) and len(set(kinds.values())) == 1:
        return None
    others = [f for f, k in kinds.items() if k is None] or [f for f in tables if kinds[f] != kinds[tables[0]]]

    def names(fs):
        return ", ".join(str(f.relative_to(path)) for f in fs[:3]) + (", ..." if len(fs) > 3 else "")

    return (f"{path}: holds tables ({names(tables)}) beside other files ({names(others)}); a directory is read "
            "as one table when every file in it is Parquet, or every one JSON lines: name the tables "
            "themselves, or move the other files out")


def _first_char(path: Path) -> Optional[str]:
    try:
        with open_binary(path) as f:
            head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    except (OSError, UserError):
        return None
    return head[:1] or None


def dir_files(path: Path) -> list[Path]:
    """The files of a directory of tables, sorted: hidden files, empty files and names starting with ``_``
    (Spark's and Hadoop's ``_SUCCESS``, ``_committed_...`` markers) left out."""
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        files += [Path(root) / n for n in sorted(names) if not n.startswith((".", "_"))
                  and (Path(root) / n).stat().st_size > 0]
    return files


# --------------------------------------------------------------------------- opening files

class CountingReader(io.RawIOBase):
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


def open_binary(path: Path, counter: Optional[list] = None):
    """A binary stream of ``path``, decompressed (gzip, zstd, bzip2, xz recognised from the first bytes)."""
    raw = CountingReader(open(path, "rb"))
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


STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, ValueError)


def stream_error(path: Path, exc: BaseException, rows: int) -> BadRow:
    kind = compression_of(path) or "compressed"
    detail = str(exc).strip().rstrip(".") or type(exc).__name__
    return BadRow(f"{path}: {kind} data truncated or corrupt after {rows:,} rows ({detail})",
                  "truncated or corrupt files")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def is_stream_error(exc: OSError) -> bool:
    """Decompressors raise OSError for corrupt data (gzip's BadGzipFile, bz2's 'Invalid data stream'); a real
    I/O error (a vanished file, a full disk) has an errno."""
    return exc.errno is None


class Bad:
    """A row that failed to parse: turned into its BadRow when its values are asked for."""

    def __init__(self, message: str, reason: str):
        self.error = BadRow(message, reason)
