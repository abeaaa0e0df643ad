"""What noising (BART) and masking (BERT/RoBERTa) share: where words start in a sample, Poisson span
lengths, and which positions a set of spans covers.

The per-*token* rule (does ``Ġfoo`` / ``##ing`` / ``▁x`` start a word?) is the vocabulary's,
:mod:`fairseq_ext.vocab.word_starts`, handed in as a boolean table over the vocabulary; the
functions here apply it to the *positions* of one sample. Pure numpy, explicit generators.
"""

from __future__ import annotations

import numpy as np


def word_starts_at(tokens: np.ndarray, is_word_start: np.ndarray, special: np.ndarray) -> np.ndarray:
    """Boolean per position: the token starts a word, by the vocabulary's rule or because it follows a
    special token (bos, a sentence's eos), whatever its spelling.

    Callers decide about the first and last positions (noising never starts a word there, masking
    always may at the first).

    >>> ws = np.array([True, True, True, False, True])   # vocab: 0 bos, 1 eos, 2 "Ġa", 3 "b", 4 "c"
    >>> sp = np.array([True, True, False, False, False])
    >>> word_starts_at(np.array([0, 3, 3, 1, 3, 2]), ws, sp).astype(int).tolist()
    [1, 1, 0, 1, 1, 1]
    """
    starts = is_word_start[tokens].copy()
    starts[1:] |= special[tokens[:-1]]  # after bos/eos a new word begins
    return starts


def poisson_span_lengths(n_words: int, poisson_lambda: float, rng: np.random.Generator) -> np.ndarray:
    """Span lengths in words, drawn from Poisson(``poisson_lambda``), whose sum is ``n_words``; zeros
    are empty spans (BART inserts a mask for each). The last span is cut to fit.

    >>> int(poisson_span_lengths(10, 3.5, np.random.default_rng(0)).sum())
    10
    """
    draws = rng.poisson(poisson_lambda, size=n_words)
    while draws.sum() < n_words:
        draws = np.concatenate([draws, rng.poisson(poisson_lambda, size=n_words)])
    cum = np.cumsum(draws)
    last = int(np.searchsorted(cum, n_words))  # first span reaching the budget
    draws = draws[: last + 1].copy()
    draws[last] = n_words - (cum[last - 1] if last > 0 else 0)
    return draws


def covered(size: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Boolean per position of a sample of ``size`` tokens: inside some span ``[starts[i], ends[i])``.

    Spans may overlap or touch; ``ends`` may be ``size``. Vectorised (a difference array).

    >>> covered(6, np.array([1, 2]), np.array([3, 5])).astype(int).tolist()
    [0, 1, 1, 1, 1, 0]
    """
    delta = np.zeros(size + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:-1]) > 0
