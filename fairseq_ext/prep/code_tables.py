"""Tables of source files (The Stack-style Parquet, JSON lines, saved datasets) as a SRC of the code verbs.

A row is one file: its text (``content``), its path (``path``) and, when their
keys are given, its language and its project. Each row becomes the
:class:`~fairseq_ext.prep.code_files.SourceFile` a directory walk would give
for that file, so selection, splitting, deduplication and counting downstream
are the directory's own:

- the dataset's path is the table's name (``Lib`` for ``Lib.jsonl.zst``) then
  the row's path, as a tree's paths start with its directory's name;
- the language is the language column's value as Pygments names it
  (``Python`` -> ``python``, ``C++`` -> ``cpp``; a name Pygments does not know
  counts as ``no_language``), else the file name's, as for a file on disk;
- ``--include``/``--exclude`` match the row's path, ``--max-bytes`` its UTF-8 size;
- the project is the project column's value, else the path's directories as
  ``--split-by``/``--split-depth`` say for a tree.

A tree's walk rules (hidden files, ``.gitignore``, vendored directories) are
about a checkout on disk and do not apply to rows. The table is read once;
the text of each row the run keeps is copied to a :class:`Spool` (one unnamed
temporary file beside the output, gone when the run ends), from which the
second pass reads it in split and path order as it reads files from disk.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError
from fairseq_ext.prep.code_files import Selection, SourceFile, WalkStats, language_of
from fairseq_ext.prep.code_sources import SourceRoot
from fairseq_ext.prep.progress import progress_bar
from fairseq_ext.prep.tables import BadRow, TableInput, TableOptions, TableStats


@dataclass
class CodeTableConfig:
    """The keys of a table of source files (a column, or a dotted path into nested objects) and how to read it."""

    content_key: str = "content"
    path_key: str = "path"
    language_key: Optional[str] = None
    project_key: Optional[str] = None
    options: TableOptions = field(default_factory=TableOptions)

    def keys(self) -> dict[str, str]:
        keys = {"content": self.content_key, "path": self.path_key}
        keys.update({role: key for role, key in (("language", self.language_key), ("project", self.project_key))
                     if key is not None})
        return keys


class Spool:
    """The texts of the rows a run keeps, written once as the table is read and read back by offset.

    An unnamed temporary file in ``directory``: the system removes it when it is closed or the process ends,
    however it ends, so nothing is left behind.
    """

    def __init__(self, directory: Optional[Path] = None):
        self.directory = directory
        self._file = None
        self.end = 0

    def add(self, data: bytes) -> int:
        """Append ``data``; return its offset."""
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self.directory)
            self._file.write(data)
        except OSError as exc:  # a full disk: say where
            where = self.directory or tempfile.gettempdir()
            raise UserError(f"{where}: cannot write the temporary copy of the table's rows "
                            f"({(exc.strerror or str(exc)).lower()})") from None
        offset, self.end = self.end, self.end + len(data)
        return offset

    def read(self, offset: int, size: int) -> bytes:
        if self._file is not None and not self._file.closed:
            self._file.flush()
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def table_files(root: SourceRoot, cfg: CodeTableConfig, selection: Selection, max_bytes: int, walk: WalkStats,
                rows: TableStats, spool: Spool, mine: Callable[[int], bool],
                progress: bool = False) -> Iterator[SourceFile]:
    """The rows of ``root`` that pass the name and size checks, in table order; the rest counted in ``walk``.

    Only the rows ``mine(size)`` accepts (this shard's) are copied to ``spool``; the others are yielded
    unspooled, for the split plan every shard makes over the whole input. The read shows a progress bar
    (bytes of the table on disk).
    """
    table = TableInput(root.path, cfg.keys(), cfg.options, rows, fmt=root.table)
    with progress_bar(table.size or 0, progress, desc=f"reading {root.name}") as bar:
        for n, (where, values) in enumerate(table):
            if n % 256 == 0:
                bar.update(table.bytes_done() - bar.n)
            rel = _row_path(values["path"], where, cfg, rows)
            if rel is None:
                continue
            walk.files_seen += 1
            data = values["content"].encode("utf-8")
            language = (_canonical_language(values["language"]) if cfg.language_key is not None
                        else language_of(rel.rsplit("/", 1)[-1]))
            reason = selection.reason(rel, language) or ("too_large" if len(data) > max_bytes else None)
            if reason is not None:
                walk.skipped[reason] += 1
                continue
            offset = spool.add(data) if mine(len(data)) else -1
            yield SourceFile(root.path, f"{root.name}/{rel}", tuple(rel.split("/")[:-1]), len(data), language,
                             project=values.get("project"), spool=spool if offset >= 0 else None, offset=offset)


def _row_path(path: str, where: str, cfg: CodeTableConfig, rows: TableStats) -> Optional[str]:
    """The row's path with ``/`` separators and no leading ``/`` or ``./``; an empty one is a bad row."""
    rel = path.replace("\\", "/").strip()
    while rel.startswith(("/", "./")):
        rel = rel[1:] if rel.startswith("/") else rel[2:]
    if rel and not rel.endswith("/"):
        return rel
    bad = BadRow(f"{where}: {cfg.path_key!r} is {'empty' if not rel else 'a directory'} ({path!r}), "
                 "not a file's path", "paths not a file's")
    if not cfg.options.skip_bad_rows:
        raise bad
    rows.rows -= 1
    rows.bad[bad.reason] += 1
    return None


@functools.lru_cache(maxsize=4096)
def _canonical_language(name: str) -> Optional[str]:
    """A language column's value as :func:`~fairseq_ext.prep.code_files.language_of` spells it, or None."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(name.strip().lower())
    except ClassNotFound:
        return None
    return lexer.aliases[0] if lexer.aliases else None
