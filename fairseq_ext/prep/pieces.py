"""Text -> tokenizer pieces, one line per item, for fairseq's classic two-step pipeline.

``fairseq-preprocess --user-dir fairseq_ext --task hf_masked_lm --only-source
--srcdict TOK`` turns the pieces written here into exactly the ``.bin``/``.idx``
bytes that ``fairseq-ext binarize`` writes from the same text: the items come
from the same encoder (:func:`fairseq_ext.prep.binarizer.encode_items`), so
long lines are cut the same way, a run of blank lines becomes one blank line
(the document separator, an empty item once binarized), and text spelling a
special token is written as ordinary pieces. Each line is the item's tokens as
their vocabulary strings, space-separated, without the eos that
``fairseq-preprocess`` appends.

Several inputs are read one after the other, each ending its last document:
the output is that of their concatenation with a blank line between files.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from fairseq_ext.errors import UserError
from fairseq_ext.prep.binarize_dir import load_line_encoder
from fairseq_ext.prep.binarizer import encode_items, is_line_source, source_size
from fairseq_ext.prep.progress import progress_bar

_WHITESPACE = re.compile(r"\s")  # what fairseq's tokenize_line splits on


class PieceWriter:
    """An item sink (see ``encode_items``) that writes items as lines of pieces.

    >>> import io
    >>> out = io.StringIO()
    >>> w = PieceWriter(out, ["<s>", "<pad>", "</s>", "<unk>", "a", "b"])
    >>> w.add(np.array([4, 5, 2, 5, 2]), np.array([3, 0, 2]))
    >>> print(out.getvalue(), end="")
    a b
    <BLANKLINE>
    b
    """

    def __init__(self, fd: TextIO, symbols: Sequence[str]):
        self.fd = fd
        self.pieces = np.array(list(symbols), dtype=object)
        # A piece fairseq's tokenize_line would split (or drop) cannot go through a text file.
        self.unsafe = np.array([i for i, s in enumerate(symbols) if not s or _WHITESPACE.search(s)], dtype=np.int64)
        self.source = ""
        self.lines = 0
        self.pieces_written = 0
        self.separators = 0
        self._wrote = False  # any line written so far
        self._boundary = False  # a file ended since the last line

    def start_file(self, path: str | os.PathLike) -> None:
        """The next items come from ``path``; the previous file's last document has ended."""
        self.source = str(path)
        self._boundary = self._wrote

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        if not len(sizes):
            return
        ends = np.cumsum(sizes)
        is_text = sizes > 0
        eos_at = ends[is_text] - 1  # every text item ends with eos; separators are empty
        body = np.ones(tokens.size, dtype=bool)
        body[eos_at] = False
        self._check_safe(tokens[body])
        words = self.pieces[tokens]  # (N,) piece strings
        words[eos_at] = "\n"
        words = np.insert(words, (ends - sizes)[~is_text], "\n")
        if self._boundary and is_text[0]:
            words = np.insert(words, 0, "\n")
            self.separators += 1
            self.lines += 1
        # Pieces hold no whitespace (checked), so every " \n" / "\n " is a join seam.
        self.fd.write(" ".join(words.tolist()).replace(" \n", "\n").replace("\n ", "\n"))
        self.lines += len(sizes)
        self.separators += int((~is_text).sum())
        self.pieces_written += int(body.sum())
        self._wrote, self._boundary = True, False

    def _check_safe(self, ids: np.ndarray) -> None:
        if not self.unsafe.size:
            return
        hits = ids[np.isin(ids, self.unsafe)]
        if hits.size:
            i = int(hits[0])
            raise UserError(
                f"{self.source}: token {self.pieces[i]!r} (id {i}) is empty or holds whitespace, which "
                "fairseq-preprocess splits on; binarize this text with `fairseq-ext binarize` instead"
            )


def encode_to_pieces(
    tokenizer: str | os.PathLike,
    inputs: Sequence,
    output: str | os.PathLike,
    max_line_tokens: int = 510,
    batch_bytes: int = 4 << 20,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the pieces of ``inputs`` (text files or :class:`~fairseq_ext.prep.tables.TableText`, in order) to
    ``output``; return the counts.

    Returns ``{"inputs": [counts per input, as binarize reports them], "lines",
    "pieces", "separators", ...}``. ``output`` appears whole or not at all.
    """
    inputs = [p if is_line_source(p) else Path(p) for p in inputs]  # text files, or tables' text
    output = Path(output)
    _check_paths([p for p in inputs if isinstance(p, Path)], output, overwrite,
                 [Path(p.name) for p in inputs if not isinstance(p, Path) and Path(p.name).exists()])
    tok, symbols, encoder = load_line_encoder(tokenizer, max_line_tokens)
    sizes = [source_size(p) for p in inputs]
    result: dict = {"tokenizer": str(tokenizer), "output": str(output), "max_line_tokens": max_line_tokens,
                    "inputs": []}
    # the bar closes (and clears its line) before an error is printed
    with _atomic_text_file(output) as fd, progress_bar(None if None in sizes else sum(sizes), progress) as bar:
        writer = PieceWriter(fd, symbols)
        for path in inputs:
            bar.set_description(path.name if isinstance(path, Path) else Path(path.name).name)
            writer.start_file(path)
            result["inputs"].append(encode_items(path, encoder, writer, batch_bytes, progress=bar.update).as_dict())
    result.update(lines=writer.lines, pieces=writer.pieces_written, separators=writer.separators)
    return result


def _check_paths(inputs: list[Path], output: Path, overwrite: bool, tables: Sequence[Path] = ()) -> None:
    for path in inputs:
        if not path.exists():
            raise UserError(f"{path}: no such file (-i)")
        if not path.is_file():
            raise UserError(f"{path}: not a file (-i takes text files)")
    if output.is_dir():
        raise UserError(f"{output}: is a directory (-o names the file to write)")
    if output.exists() and not overwrite:
        raise UserError(f"{output}: exists (pass --overwrite to replace it)")
    if any(output.resolve() == p.resolve() for p in [*inputs, *tables]):
        raise UserError(f"{output}: is also an input (-o must name another file)")


class _atomic_text_file:
    """Open a temporary file beside ``path`` for writing; it becomes ``path`` only on success."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> TextIO:
        self.made = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write there ({exc.strerror})") from None
        self.fd = open(fd, "w", encoding="utf-8", newline="\n")
        return self.fd

    def __exit__(self, exc_type, exc, tb) -> None:
        self.fd.close()
        if exc_type is not None:
            os.unlink(self.tmp)
            for d in self.made:  # innermost first
                d.rmdir()
            return
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
