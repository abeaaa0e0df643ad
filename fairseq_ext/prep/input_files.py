"""The files a tokenizer learns from: files named, and the files under directories named.

Directories are walked like ``code-dataset`` walks SRC (sorted; ``.gitignore``
honoured; vendored, hidden and symlinked trees skipped; ``--languages``,
``--include``, ``--exclude``). Every file, named or found, that is empty,
binary or not valid UTF-8 is skipped and counted, never fatal: an empty
``__init__.py`` in a source tree is normal.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError
from fairseq_ext.prep.code_files import Selection, WalkStats, walk_sources


def collect_text_files(inputs: Sequence[str | os.PathLike], selection: Optional[Selection] = None,
                       skipped: Optional[Counter] = None) -> list[Path]:
    """Readable text files among ``inputs``; what is left out is counted in ``skipped`` (reason -> files).

    Raises when an input does not exist, a directory holds no file at all, or nothing is left.
    """
    selection = selection or Selection(require_language=False)
    skipped = Counter() if skipped is None else skipped
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            walk = WalkStats()
            found = [f.path for f in walk_sources(path, selection, sys.maxsize, walk)]
            if walk.files_seen == 0:
                raise UserError(f"{path}: directory holds no files")
            skipped.update(walk.skipped)
            candidates = found
        elif path.is_file():
            candidates = [path]
        else:
            raise UserError(f"{path}: no such file or directory")
        for f in candidates:
            reason = content_reason(f)
            if reason is None:
                files.append(f)
            else:
                skipped[reason] += 1
    if not files:
        raise UserError(f"{', '.join(map(str, inputs))}: no text to learn from (skipped: {describe(skipped)})")
    return files


def content_reason(path: Path) -> Optional[str]:
    """``empty`` (no bytes), ``binary`` (control bytes in the first 64 KiB), ``undecodable`` (not UTF-8), or None.

    The UTF-8 check streams the file in 1 MiB chunks: memory stays flat for a corpus of any size.
    """
    from fairseq_ext.prep.text_prep import looks_binary

    with open(path, "rb") as f:
        head = f.read(65536)
        if not head:
            return "empty"
        if looks_binary(head):
            return "binary"
        decoder = codecs.getincrementaldecoder("utf-8")()
        chunk = head
        try:
            while chunk:
                decoder.decode(chunk)
                chunk = f.read(1 << 20)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "undecodable"
    return None


def describe(skipped: Counter) -> str:
    """``1 empty file, 2 binary files`` (reasons in a fixed order), or ``nothing``.

    >>> describe(Counter({"binary": 2, "empty": 1}))
    '1 empty file, 2 binary files'
    """
    order = ("empty", "binary", "undecodable", "hidden", "symlink", "gitignored", "not_selected", "no_language")
    parts = [f"{skipped[r]} {r.replace('_', ' ')} file{'s' if skipped[r] != 1 else ''}"
             for r in sorted(skipped, key=lambda r: (order.index(r) if r in order else len(order), r))
             if skipped[r]]
    return ", ".join(parts) or "nothing"
