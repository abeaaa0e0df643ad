"""Documents of very different sizes, and what a binarized split holds read back document by document (for the
tests that compare shards with one run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fairseq.data.indexed_dataset import MMapIndexedDataset

from conftest import make_text


def sized_documents(n_lines: int, max_sentences: int, seed: int) -> list[str]:
    """``make_text``'s sentences, one a line, grouped into documents of 1 to ``max_sentences`` of them."""
    rng = np.random.default_rng(seed)
    lines, docs = make_text(n_lines, seed=seed), []
    while lines:
        k = int(rng.integers(1, max_sentences + 1))
        docs.append("\n".join(lines[:k]))
        lines = lines[k:]
    return docs


def documents(prefix: Path) -> list[tuple]:
    """The documents of a binarized split, each a tuple of its items (tuples of ids)."""
    ds = MMapIndexedDataset(str(prefix))
    docs, current = [], []
    for i in range(len(ds)):
        item = tuple(ds[i].tolist())
        if item:
            current.append(item)
        else:
            assert current, f"{prefix}: empty document (two separators in a row, or one first)"
            docs.append(tuple(current))
            current = []
    assert current, f"{prefix}: ends with a separator"
    return [*docs, tuple(current)]
