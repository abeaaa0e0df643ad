"""Split one text file's items into N shards, keeping every document whole.

``fairseq-ext binarize --shards N`` streams the training text through the
binarizer once; :class:`ShardRouter` is the sink that sends each document to
the shard holding the fewest tokens so far (ties: the lowest shard). The
choice is made when a document starts, from the tokens of the documents
before it, so it depends on the text only, never on batch sizes or threads:
the same input always gives the same shards. Each shard's token count is
within one document of every other's, every shard gets one of the first N
documents, and a shard keeps its documents in input order, so each shard is a
sample of the whole corpus rather than one slice of it.

In a shard, as in an unsharded file, documents are separated by one empty
item (fairseq's ``complete_doc`` separator) and nothing precedes the first.

>>> import numpy as np
>>> class Sink:
...     def __init__(self): self.sizes = []
...     def add(self, tokens, sizes): self.sizes += sizes.tolist()
>>> sinks = [Sink(), Sink()]
>>> router = ShardRouter(sinks)
>>> router.add(np.arange(9), np.array([3, 0, 1, 0, 2, 2, 0, 1]))  # documents of 3, 1, 4 and 1 tokens
>>> [s.sizes for s in sinks], router.documents, router.tokens
([[3, 0, 1], [1, 0, 2, 2]], [2, 2], [4, 5])
"""

from __future__ import annotations

import heapq
import os
import resource
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from fairseq_ext.prep.binarizer import BinarizeStats, encode_items
from fairseq_ext.prep.line_encoder import BinarizeError, LineEncoder
from fairseq_ext.prep.mmap_writer import ItemSink, MMapWriter

FILES_PER_SHARD = 2  # an open shard writes PREFIX.bin and a side file of item sizes
SPARE_FILES = 64  # the input, the tokenizer's files, Python's own


class ShardRouter:
    """An :class:`ItemSink` that deals whole documents out to ``sinks`` (one per shard)."""

    def __init__(self, sinks: Sequence[ItemSink]):
        if not sinks:
            raise ValueError("ShardRouter needs at least one sink")
        self.sinks = list(sinks)
        n = len(self.sinks)
        self.documents = [0] * n
        self.items = [0] * n
        self.tokens = [0] * n
        self._heap = [(0, i) for i in range(n)]  # (tokens so far, shard): the next document's shard on top
        self._current: Optional[int] = None  # shard of the document the last batch ended in
        self._document_tokens = 0  # tokens of the document being read so far
        self._largest = 0  # tokens of the largest document finished

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        """One batch of items (``sizes[i] == 0`` is a document separator), in input order."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.size == 0:
            return
        is_sep = sizes == 0
        segment = np.cumsum(is_sep)  # items after the k-th separator of the batch are segment k
        keep = ~is_sep
        n_segments = int(segment[-1]) + 1
        seg_items = np.bincount(segment[keep], minlength=n_segments)
        seg_tokens = np.bincount(segment[keep], weights=sizes[keep], minlength=n_segments).astype(np.int64)
        seg_shard, needs_sep = self._assign(seg_items, seg_tokens)
        item_shard = seg_shard[segment[keep]]
        kept_sizes = sizes[keep]
        # group items (and their tokens) by shard, input order kept within each shard
        item_order = np.argsort(item_shard, kind="stable")
        token_order = np.argsort(np.repeat(item_shard, kept_sizes), kind="stable")
        grouped_tokens = np.asarray(tokens)[token_order]
        grouped_sizes = kept_sizes[item_order]
        grouped_segments = segment[keep][item_order]
        shard_items = np.bincount(item_shard, minlength=len(self.sinks))
        shard_tokens = np.bincount(item_shard, weights=kept_sizes, minlength=len(self.sinks)).astype(np.int64)
        item_end, token_end = np.cumsum(shard_items), np.cumsum(shard_tokens)
        for s in np.flatnonzero(shard_items):
            i0, t0 = item_end[s] - shard_items[s], token_end[s] - shard_tokens[s]
            segs = grouped_segments[i0 : item_end[s]]
            first = np.flatnonzero(np.r_[True, segs[1:] != segs[:-1]])  # first item of each segment
            out_sizes = np.insert(grouped_sizes[i0 : item_end[s]], first[needs_sep[segs[first]]], 0)
            self.sinks[s].add(grouped_tokens[t0 : token_end[s]], out_sizes)
            self.items[s] += len(out_sizes)
            self.tokens[s] += int(shard_tokens[s])

    def _assign(self, seg_items: np.ndarray, seg_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's shard, and whether a separator goes before it. One step per document, not per token."""
        seg_shard = np.zeros(len(seg_items), dtype=np.int64)
        needs_sep = np.zeros(len(seg_items), dtype=bool)
        tokens = seg_tokens.tolist()  # Python ints: this loop runs once per document
        for k in np.flatnonzero(seg_items).tolist():
            if k == 0 and self._current is not None:  # the document the previous batch ended in goes on
                shard = self._current
                self._push(shard, tokens[k])
                self._document_tokens += tokens[k]
            else:
                self._largest = max(self._largest, self._document_tokens)
                self._document_tokens = tokens[k]
                load, shard = self._heap[0]  # the least-loaded shard (the lowest on a tie)
                heapq.heapreplace(self._heap, (load + tokens[k], shard))
                needs_sep[k] = self.documents[shard] > 0
                self.documents[shard] += 1
            seg_shard[k] = shard
            self._current = shard
        if len(seg_items) > 1 and not seg_items[-1]:  # the batch ends with a separator: no document goes on
            self._current = None
        return seg_shard, needs_sep

    def _push(self, shard: int, tokens: int) -> None:
        """Add ``tokens`` to ``shard``'s load in the heap (a document continuing across batches)."""
        for j, (load, s) in enumerate(self._heap):
            if s == shard:
                self._heap[j] = (load + tokens, s)
                heapq.heapify(self._heap)
                return

    @property
    def largest_document(self) -> int:
        """Tokens (eos included) of the largest document seen: how far apart the shards' sizes can be."""
        return max(self._largest, self._document_tokens)

    def counts(self) -> list[dict]:
        """Per shard: documents, items (separators included) and tokens (eos included)."""
        return [{"documents": d, "items": i, "tokens": t} for d, i, t in zip(self.documents, self.items, self.tokens)]


def shard_dirs(root: str | os.PathLike, n: int) -> list[Path]:
    """``root/shard0 ... root/shard{n-1}``."""
    return [Path(root) / f"shard{i}" for i in range(n)]


def data_path(dirs: Sequence[str | os.PathLike]) -> str:
    """The DATA argument of fairseq-train for these shards: ``shard0:shard1:...``."""
    return os.pathsep.join(str(d) for d in dirs)


class LazyMMapWriter:
    """An :class:`MMapWriter` opened at its first item: only shards that get a document hold files open."""

    def __init__(self, prefix: str | os.PathLike, dtype: np.dtype):
        self.prefix, self.dtype = prefix, dtype
        self.writer: Optional[MMapWriter] = None

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        if self.writer is None:
            self.writer = MMapWriter(self.prefix, self.dtype)
        self.writer.add(tokens, sizes)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def check_open_files(shards: int, limits: Optional[tuple[int, int]] = None) -> None:
    """Raise the soft limit on open files as far as ``shards`` need (all are written at once), or refuse.

    ``limits``: (soft, hard) for tests; by default the process's own, which this raises when needed.
    """
    needed = FILES_PER_SHARD * shards + SPARE_FILES
    soft, hard = limits or resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        most = max(1, (hard - SPARE_FILES) // FILES_PER_SHARD)
        raise BinarizeError(f"--shards {shards}: writing that many shards at once needs {needed:,} open files, more "
                            f"than this system allows (ulimit -Hn: {hard:,}); use at most {most:,} shards")
    if limits is None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def binarize_text_sharded(
    path: str | os.PathLike,
    out_prefixes: Sequence[str | os.PathLike],
    encoder: LineEncoder,
    dtype: np.dtype,
    batch_bytes: int = 4 << 20,
    progress: Optional[Callable[[int], None]] = None,
) -> tuple[BinarizeStats, list[dict]]:
    """Binarize one text file into ``prefix.{bin,idx}`` for every prefix, documents dealt out whole.

    Returns the whole file's counts (with ``largest_document`` in its ``extra``) and
    :meth:`ShardRouter.counts`. The caller
    removes the output on failure (it is written inside an atomic directory).
    """
    check_open_files(len(out_prefixes))
    writers = [LazyMMapWriter(prefix, dtype) for prefix in out_prefixes]
    try:
        router = ShardRouter(writers)
        stats = encode_items(path, encoder, router, batch_bytes, progress)
    finally:
        for w in writers:
            w.close()
    stats.extra["largest_document"] = router.largest_document
    return stats, router.counts()
