"""The one walk over directories that every reader of a tree uses: sorted, top-down, prunable."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path


def sorted_walk(root: Path, keep_dir: Callable[[Path, str], bool]) -> Iterator[tuple[Path, str, list[str]]]:
    """(directory, its path relative to ``root`` with "/" ("" for ``root``), its file names sorted) for ``root``
    and the directories below it, top-down, each directory's subdirectories in sorted order.

    The one walk of every reader of directories (code-dataset, train-tokenizer, prepare, the built-in
    corpus). A subdirectory is entered when ``keep_dir(path, relative path)`` says so; it is asked
    after its parent has been handed out, so the caller may first read the parent (a ``.gitignore``).
    """
    for dirpath, dirs, names in os.walk(root):
        directory = Path(dirpath)
        rel_dir = directory.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        yield directory, rel_dir, sorted(names)
        dirs[:] = [d for d in sorted(dirs) if keep_dir(directory / d, f"{rel_dir}/{d}" if rel_dir else d)]
