"""fairseq's mmap indexed-dataset format (``PREFIX.bin`` + ``PREFIX.idx``), written in a stream.

What ``fairseq.data.indexed_dataset.MMapIndexedDataset`` reads: the token ids of every item back to
back in ``.bin``; in ``.idx`` a magic header, the version, the dtype code, the item count, every
item's size, then every item's byte offset. Token ids take the smallest dtype that holds the
vocabulary (:func:`best_dtype`).
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

import numpy as np

MMAP_MAGIC = b"MMIDIDX\x00\x00"


# fairseq's indexed_dataset._code_to_dtype, for the dtypes we write.
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.uint32): 9, np.dtype(np.int64): 5}


def best_dtype(vocab_size: int) -> np.dtype:
    """The dtype fairseq's ``best_fitting_int_dtype`` picks for this vocabulary."""
    if vocab_size < 65500:
        return np.dtype(np.uint16)
    if vocab_size < 4294967295:
        return np.dtype(np.uint32)
    return np.dtype(np.int64)


class ItemSink(Protocol):
    """Where encoded items go: :class:`MMapWriter`, or ``fairseq-ext encode``'s piece writer."""

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None: ...


class MMapWriter:
    """Writes ``PREFIX.bin`` and ``PREFIX.idx`` as fairseq's MMapIndexedDataset reads them.

    Sizes go to a side file while streaming, so memory stays flat; the index
    is assembled from it in chunks at the end.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype):
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype)
        self._bin = open(self.prefix + ".bin", "wb")
        self._sizes = open(self.prefix + ".sizes.tmp", "wb")
        self.count = 0

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        tokens.astype(self.dtype, copy=False).tofile(self._bin)
        sizes.astype(np.int32, copy=False).tofile(self._sizes)
        self.count += len(sizes)

    def close(self, chunk: int = 1 << 20) -> None:
        self._bin.close()
        self._sizes.close()
        sizes_path = self.prefix + ".sizes.tmp"
        with open(self.prefix + ".idx", "wb") as idx:
            idx.write(MMAP_MAGIC)
            idx.write(struct.pack("<Q", 1))
            idx.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            idx.write(struct.pack("<Q", self.count))
            sizes = np.memmap(sizes_path, dtype=np.int32, mode="r") if self.count else np.zeros(0, np.int32)
            for start in range(0, self.count, chunk):
                idx.write(np.ascontiguousarray(sizes[start : start + chunk]).tobytes())
            address = 0
            for start in range(0, self.count, chunk):
                block = sizes[start : start + chunk].astype(np.int64) * self.dtype.itemsize
                pointers = np.cumsum(block) - block + address
                idx.write(pointers.tobytes())
                address += int(block.sum())
            del sizes
        os.remove(sizes_path)
