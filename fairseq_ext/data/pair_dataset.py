"""(query, key) pairs of a pairs directory (``fairseq-ext code-pairs``) as a fairseq dataset.

Each side is read like :class:`~fairseq_ext.data.arrow_dataset.ArrowTokenDataset` reads a code
dataset (memory-mapped, no copy) from the ``query_ids``/``key_ids`` columns, and becomes model input
the way ``code_mlm`` builds samples: bos when the tokenizer has one, the ids, eos. A side longer
than its limit is cut (:func:`side_tokens`): a key keeps its start; a query keeps a window around
its mask token when it has one (a CoCoS span pair's query is the whole file with the span replaced
by the mask: the code around the hole is what tells where the span belongs), else its start.
``eval-retrieval`` builds its inputs with the same function, so training, validation and
evaluation see the same tokens.

A batch is ``{"id", "nsentences", "ntokens", "net_input": {"query_tokens": (B, Tq), "key_tokens":
(B, Tk)}}``, right-padded; ``model(**batch["net_input"])`` embeds both sides. A pair costs the
tokens of both sides in ``--max-tokens`` budgets.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from fairseq_ext.data.arrow_dataset import ArrowTokenDataset


def side_tokens(ids: np.ndarray, limit: int, bos: int | None, eos: int, mask: int | None = None) -> torch.Tensor:
    """[bos] + ids (cut to fit) + [eos], at most ``limit`` tokens (a LongTensor).

    A cut keeps the start, or, when ``mask`` occurs in ``ids``, a window centred on its first occurrence.
    """
    room = limit - 1 - (bos is not None)
    if room < 1:
        raise ValueError(f"a side of {limit} tokens has no room for any token besides bos/eos")
    ids = np.asarray(ids)
    if ids.size > room:
        start = 0
        if mask is not None:
            where = np.flatnonzero(ids == mask)
            if where.size:
                start = int(min(max(0, where[0] - room // 2), ids.size - room))
        ids = ids[start:start + room]
    out = torch.empty(ids.size + 1 + (bos is not None), dtype=torch.long)
    if bos is not None:
        out[0] = bos
    out[int(bos is not None):-1] = torch.from_numpy(ids.astype(np.int64))
    out[-1] = eos
    return out


class PairDataset(FairseqDataset):
    """Pair ``i`` of one split: ``{"id": i, "query": LongTensor, "key": LongTensor}``, each side cut to its limit."""

    def __init__(self, directory: str | os.PathLike, split: str, dictionary, max_query_tokens: int,
                 max_key_tokens: int, mask: int | None, shuffle: bool = True, seed: int = 1, pad_to_multiple: int = 1):
        self.dictionary, self.mask, self.shuffle, self.seed = dictionary, mask, shuffle, seed
        self.pad_to_multiple = pad_to_multiple  # each side's length in a batch: a multiple of it (8: tensor cores)
        self.max_query_tokens, self.max_key_tokens = max_query_tokens, max_key_tokens
        eos = dictionary.eos()
        self.queries = ArrowTokenDataset(directory, split, eos, "query_ids", "query_length")
        self.keys = ArrowTokenDataset(directory, split, eos, "key_ids", "key_length")
        extra = 1 + (dictionary.bos_index is not None)  # bos, eos
        self.query_sizes = np.minimum(self.queries.sizes - 1 + extra, max_query_tokens)
        self.key_sizes = np.minimum(self.keys.sizes - 1 + extra, max_key_tokens)
        self.sizes = self.query_sizes + self.key_sizes
        self.queries_cut = int((self.queries.sizes - 1 + extra > max_query_tokens).sum())
        self.keys_cut = int((self.keys.sizes - 1 + extra > max_key_tokens).sum())
        self.epoch = 1

    def side(self, index: int, which: str) -> torch.Tensor:
        d = self.dictionary
        if which == "query":
            return side_tokens(self.queries.ids(index), self.max_query_tokens, d.bos_index, d.eos(), self.mask)
        return side_tokens(self.keys.ids(index), self.max_key_tokens, d.bos_index, d.eos())

    def __getitem__(self, index):
        index = int(index)
        return {"id": index, "query": self.side(index, "query"), "key": self.side(index, "key")}

    def __len__(self):
        return len(self.sizes)

    def collater(self, samples):
        if not samples:
            return {}
        pad = self.dictionary.pad()
        multiple = self.pad_to_multiple
        query = data_utils.collate_tokens([s["query"] for s in samples], pad, pad_to_multiple=multiple)
        key = data_utils.collate_tokens([s["key"] for s in samples], pad, pad_to_multiple=multiple)
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": int(query.ne(pad).sum() + key.ne(pad).sum()),
            "net_input": {"query_tokens": query, "key_tokens": key},
        }

    def num_tokens(self, index):
        return self.sizes[index]

    def size(self, index):
        return self.sizes[index]

    def ordered_indices(self):
        """By size (then shuffled within equal sizes), as fairseq batches by token budget."""
        if self.shuffle:
            with data_utils.numpy_seed(self.seed, self.epoch):
                order = np.random.permutation(len(self))
        else:
            order = np.arange(len(self))
        return order[np.argsort(self.sizes[order], kind="mergesort")]

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # a new shuffle every epoch

    def filter_indices_by_size(self, indices, max_sizes):
        return indices, []  # sides are cut to their limits: nothing is too long

    @property
    def supports_prefetch(self):
        return False
