"""The SRC arguments of ``code-dataset`` and ``code-pairs``: directories of source files, or tables of them.

Paths in a dataset start with their SRC's name (a directory's name; a table's without its suffixes), so two
SRC of the same name are refused before any work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError


@dataclass(frozen=True)
class SourceRoot:
    """A SRC: a directory of source files, or a table of them (``table``: its format, see ``tables.FORMATS``)."""

    path: Path
    name: str  # the first part of every path in the dataset: the directory's name, the table's without suffixes
    table: Optional[str] = None


def check_sources(srcs: Sequence[str | os.PathLike]) -> list[SourceRoot]:
    """SRC directories or tables, refused when missing, a file that is no table, or two of them share a name."""
    from fairseq_ext.prep.tables import table_format

    roots: dict[str, SourceRoot] = {}
    for p in map(Path, srcs):
        fmt = table_format(p) if p.exists() else None
        if fmt is None and not p.is_dir():
            raise UserError(f"{p}: {'is a file' if p.exists() else 'no such directory'}; SRC is a directory of "
                            "source files or a table of them (Parquet, JSON lines, a saved dataset)")
        name = table_name(p) if fmt is not None else p.resolve().name
        if name in roots:
            kind = "directories" if fmt is None and roots[name].table is None else "sources"
            raise UserError(f"{roots[name].path} and {p}: two SRC {kind} named {name!r}; paths in the dataset "
                            "start with SRC's name, so they would collide (rename or link one)")
        roots[name] = SourceRoot(p, name, fmt)
    return list(roots.values())


def table_name(path: Path) -> str:
    """A table's name without its format and compression suffixes: ``Lib`` for ``Lib.jsonl.zst``."""
    from fairseq_ext.prep.table_files import COMPRESSIONS, JSON_SUFFIXES

    name = path.resolve().name
    for suffixes in (tuple(COMPRESSIONS), (*JSON_SUFFIXES, ".parquet", ".pq", ".csv", ".tsv")):
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and f".{suffix.lower()}" in suffixes:
            name = stem
    return name
