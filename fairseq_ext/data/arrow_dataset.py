"""One split of a code dataset directory (``fairseq-ext code-dataset``) as a fairseq dataset, read from Arrow.

The directory holds ``DatasetDict.save_to_disk`` output; ``datasets.load_from_disk``
memory-maps its Arrow files, and this dataset reads the ``input_ids`` column's
list offsets and values as numpy views of those maps: no second copy of the corpus
in RAM, no per-row Python dicts. Item ``i`` is file ``i``'s ids followed by eos, as
in the mmap format ``fairseq-ext binarize`` writes. Pickling keeps only the
directory and split, so ``--num-workers`` workers map the same files again.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from fairseq.data import FairseqDataset

from fairseq_ext.errors import UserError


class CodeDataError(UserError):
    """A code dataset directory that cannot be read as the code tasks expect."""


def is_arrow_dataset_dir(path: str | os.PathLike) -> bool:
    """Does ``path`` hold ``DatasetDict.save_to_disk`` output?"""
    return os.path.isfile(os.path.join(path, "dataset_dict.json"))


def load_arrow_split(directory: str | os.PathLike, split: str, columns=("input_ids", "length")):
    """``datasets.load_from_disk(directory)[split]``, with one-line errors naming the directory (and
    a missing column of ``columns``)."""
    import datasets

    if not is_arrow_dataset_dir(directory):
        raise CodeDataError(f"{directory}: no dataset_dict.json (not a directory written by "
                            "`fairseq-ext code-dataset`)")
    try:
        splits = datasets.load_from_disk(str(directory))
    except Exception as exc:  # datasets raises several kinds for a damaged directory
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CodeDataError(f"{directory}: cannot be loaded with datasets.load_from_disk: {first}") from None
    if split not in splits:
        raise CodeDataError(f"{directory}: no '{split}' split (it has: {', '.join(sorted(splits)) or 'none'})")
    dataset = splits[split]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise CodeDataError(f"{directory}/{split}: no column {', '.join(missing)} (columns: "
                            f"{', '.join(dataset.column_names)})")
    return dataset


class ArrowTokenDataset(FairseqDataset):
    """File ``i`` of one split: its ``input_ids`` then ``eos``, a LongTensor; ``sizes`` count the eos.

    ``ArrowTokenDataset("code-data", "train", eos=2)[0]`` is the first training file's ids and 2
    (``tests/data/test_arrow_dataset.py`` builds such a directory). ``column``/``length_column`` name other
    columns of the same kind (a pairs directory's ``query_ids``/``query_length``).
    """

    def __init__(self, directory: str | os.PathLike, split: str, eos: int, column: str = "input_ids",
                 length_column: str = "length"):
        self.directory, self.split, self.eos = str(directory), split, int(eos)
        self.column, self.length_column = column, length_column
        self._open()

    def _open(self) -> None:
        dataset = load_arrow_split(self.directory, self.split, (self.column, self.length_column))
        table = dataset.data.table  # a pyarrow Table over the memory-mapped files
        if dataset._indices is not None:  # save_to_disk flattens indices; a hand-made directory might not
            raise CodeDataError(f"{self.directory}/{self.split}: has an indices mapping; save it with "
                                "flatten_indices() first")
        column = table.column(self.column)
        self._offsets, self._values = [], []
        for chunk in column.chunks:  # (rows + 1,) absolute offsets into the chunk's values, (tokens,)
            if chunk.null_count:
                raise CodeDataError(f"{self.directory}/{self.split}: {self.column} has {chunk.null_count} null rows")
            self._offsets.append(chunk.offsets.to_numpy(zero_copy_only=True))
            self._values.append(chunk.values.to_numpy(zero_copy_only=True))
        rows = np.array([len(c) for c in column.chunks], dtype=np.int64)
        self._chunk_start = np.concatenate([[0], np.cumsum(rows)])  # first row of each chunk
        lengths = table.column(self.length_column).to_numpy()
        actual = np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, np.int64)
        if lengths.shape != actual.shape or (lengths != actual).any():
            bad = int(np.flatnonzero(lengths != actual)[0]) if lengths.shape == actual.shape else len(actual)
            raise CodeDataError(f"{self.directory}/{self.split}: row {bad}: '{self.length_column}' disagrees with "
                                f"len({self.column})")
        self.sizes = lengths.astype(np.int64) + 1  # with eos

    def __getstate__(self):
        return {"directory": self.directory, "split": self.split, "eos": self.eos, "column": self.column,
                "length_column": self.length_column}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def ids(self, index: int) -> np.ndarray:
        """File ``index``'s token ids (a read-only view of the mapped file, no eos)."""
        chunk = int(np.searchsorted(self._chunk_start, index, side="right")) - 1
        row = index - self._chunk_start[chunk]
        offsets = self._offsets[chunk]
        return self._values[chunk][offsets[row]: offsets[row + 1]]

    def __getitem__(self, index):
        ids = self.ids(int(index))
        item = torch.empty(ids.size + 1, dtype=torch.long)
        item[:-1] = torch.from_numpy(ids.astype(np.int64))
        item[-1] = self.eos
        return item

    def __len__(self):
        return len(self.sizes)

    def num_tokens(self, index):
        return self.sizes[index]

    def size(self, index):
        return self.sizes[index]

    @property
    def supports_prefetch(self):
        return False


class FileSamples(FairseqDataset):
    """One item (a source file) per sample, at most ``block_size`` tokens: a longer one is cut
    (``split_long=False``: the rest is dropped and counted) or split into consecutive samples.

    Works on any item dataset with ``sizes`` (:class:`ArrowTokenDataset` or fairseq's mmap format).
    Slices are computed for all files at once; ``files_cut`` and ``tokens_dropped`` say what was lost.
    """

    def __init__(self, dataset, sizes, block_size: int, split_long: bool):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.dataset = dataset
        sizes = np.asarray(sizes, dtype=np.int64)
        pieces = np.maximum(1, -(-sizes // block_size)) if split_long else np.ones_like(sizes)
        self.item = np.repeat(np.arange(sizes.size), pieces)  # (S,) file of each sample
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)  # first sample of that file
        self.start = (np.arange(self.item.size) - first) * block_size
        self.end = np.minimum(sizes[self.item], self.start + block_size)
        self.sizes = self.end - self.start
        self.files_cut = int((sizes > block_size).sum())
        self.tokens_dropped = int(sizes.sum() - self.sizes.sum())

    def __getitem__(self, index):
        return self.dataset[int(self.item[index])][self.start[index]: self.end[index]]

    def __len__(self):
        return self.item.size

    def num_tokens(self, index):
        return self.sizes[index]

    def size(self, index):
        return self.sizes[index]

    @property
    def supports_prefetch(self):
        return False
