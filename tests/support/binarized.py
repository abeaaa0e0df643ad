"""What a binarized split holds, read back document by document (for tests that compare shards with one run)."""

from __future__ import annotations

from pathlib import Path

from fairseq.data.indexed_dataset import MMapIndexedDataset


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
