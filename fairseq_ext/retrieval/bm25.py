"""BM25 over a pool of (query, key) pairs, ranked the way the model is (:mod:`fairseq_ext.criterions.ranking`).

The keys' text is indexed with ``bm25s`` (Lucene's BM25, k1 = 1.5, b = 0.75) and each query's text
is scored against every key of the pool, a block of queries at a time, through
:func:`~fairseq_ext.criterions.ranking.rank_counts`, so ties count exactly as they do for the model: a query
that shares no word with any key scores 0 everywhere and gets the expected rank of a random order,
not rank 1.

Text becomes words for code and prose alike (:func:`code_words`): identifiers are split at ``_``,
at digits and at camelCase boundaries (``getHTTPResponse2`` -> ``get http response 2``), words are
lowercased, punctuation and one-letter words are dropped, and so are the English stopwords of
``bm25s`` ("the", "is", ...). There is no stemming. Splitting identifiers is what lets a docstring's
"read the config file" match ``def read_config_file``; renaming (``--rename``) removes exactly these
shared words.

>>> code_words("def getHTTPResponse2(self, max_len): return self._cache[max_len]  # The cache")
['def', 'get', 'http', 'response', '2', 'self', 'max', 'len', 'return', 'self', 'cache', 'max', 'len', 'cache']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from fairseq_ext.criterions.ranking import rank_counts

# camelCase humps, ALLCAPS runs (before a Capitalised word), lowercase runs, digit runs; "_" and
# everything else separate words.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _quiet_bm25s() -> None:
    """bm25s sets its own logger to DEBUG on import ("Building index from tokens" for every index); give it
    the level every other library's logger has, so what it logs is what the user asked to see."""
    import logging

    logger = logging.getLogger("bm25s")
    if logger.level == logging.DEBUG:
        logger.setLevel(logging.NOTSET)


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def code_words(text: str, stopwords: frozenset[str] | None = None) -> list[str]:
    """The words BM25 sees in ``text`` (see the module's docstring)."""
    stop = _stopwords() if stopwords is None else stopwords
    words = (w.lower() for w in _WORD.findall(text))
    return [w for w in words if (len(w) > 1 or w.isdigit()) and w not in stop]


class BM25Pool:
    """A BM25 index of a pool's keys; :meth:`rank_counts` ranks queries against all of them."""

    def __init__(self, keys: Sequence[str]):
        import bm25s

        _quiet_bm25s()
        stop = _stopwords()
        self.size = len(keys)
        self.index = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        self.index.index([code_words(k, stop) for k in keys], show_progress=False)
        self._stop = stop

    def scores(self, query: str) -> np.ndarray:
        """(N,) BM25 scores of ``query`` against every key; all 0 when it shares no word with any."""
        vocab = self.index.vocab_dict
        ids = [vocab[w] for w in code_words(query, self._stop) if w in vocab]
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.index.get_scores_from_ids(ids), dtype=np.float32)

    def rank_counts(self, queries: Sequence[str], block: int = 256, progress=None):
        """(greater, ties) of query i against all N keys (key i is its right key), as the model's."""
        if len(queries) != self.size:
            raise ValueError(f"{len(queries)} queries for a pool of {self.size} keys")
        greater, ties = [], []
        for start in range(0, len(queries), block):
            part = queries[start:start + block]
            scores = torch.from_numpy(np.stack([self.scores(q) for q in part]))  # (b, N)
            g, t = rank_counts(scores, start)
            greater.append(g)
            ties.append(t)
            if progress is not None:
                progress.update(len(part))
        if not greater:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(greater), torch.cat(ties)
