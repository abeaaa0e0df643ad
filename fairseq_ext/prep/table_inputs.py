"""What the verbs' arguments name, as inputs: each path as a table's text or as text (:func:`text_inputs`), and
``--dataset NAME [--data-files GLOB ...]`` (:func:`dataset_input`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError
from fairseq_ext.prep.table_files import is_saved_dataset, mixed_directory, table_format
from fairseq_ext.prep.tables import TableInput, TableOptions, TableStats, TableText

# --dataset builders that read local files: their files are read as tables here (file and line in messages,
# bad rows skippable, memory flat), the same rows datasets would give
LOCAL_BUILDERS = {"json": "jsonl", "parquet": "parquet", "csv": "csv"}


def dataset_input(name: str, keys: Mapping[str, str], options: TableOptions, stats: Optional[TableStats] = None,
                  data_files: Optional[Sequence[str]] = None, config: Optional[str] = None) -> TableInput:
    """A ``--dataset NAME [--data-files GLOB ...] [--dataset-config C]`` input, streamed."""
    label = f"{name}[{options.split or 'train'}]"
    if Path(name).is_dir() and is_saved_dataset(Path(name)) and not data_files:  # load_dataset refuses these
        return TableInput(name, keys, options, stats, fmt="hf-disk")
    files = expand_data_files(data_files) if data_files else None
    if files and name in LOCAL_BUILDERS and config is None:
        if options.split not in (None, "train"):
            raise UserError(f"--dataset {name} --data-files: the files make one split, train; no split "
                            f"{options.split!r} (give validation files with --valid)")
        return TableInput(f"--dataset {name}", keys, options, stats, fmt=LOCAL_BUILDERS[name], files=files)
    return TableInput(label, keys, options, stats,
                      dataset={"name": name, "data_files": [str(f) for f in files] if files else None,
                               "config": config})


def expand_data_files(patterns: Sequence[str]) -> list[Path]:
    """The files of ``--data-files``: each a path or a glob (``**`` recursive), in sorted order; a pattern that
    matches nothing is an error naming it (datasets would say only ``StopIteration``)."""
    import glob

    files: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
        found = [f for f in found if f.is_file()]
        if not found:
            raise UserError(f"--data-files {pattern}: matches no file")
        files += found
    return files


def text_inputs(paths: Sequence[str | os.PathLike], options: TableOptions,
                stats: Optional[TableStats] = None) -> list:
    """Each path as a :class:`TableText` when it is a table, else the path itself (a text file or directory);
    a directory holding tables beside other files is refused (read as text, it would read raw JSON)."""
    out = []
    for p in paths:
        fmt = table_format(p) if Path(p).exists() else None
        if fmt is None and (why := mixed_directory(p)):
            raise UserError(why)
        out.append(TableText(TableInput(p, {"text": options.text_key}, options, stats, fmt=fmt))
                   if fmt is not None else p)
    return out
