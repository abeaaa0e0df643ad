"""Masked-LM masking as a pure, vectorised numpy function with an explicit generator.

BERT/RoBERTa dynamic masking: choose ``mask_prob`` of the units (tokens, whole
words, or Poisson spans of whole words; or, for code, identifiers with every
occurrence of each, see :func:`choose_identifiers`), then replace 80% of the chosen tokens
by the mask token, 10% by a random token and leave 10% unchanged (configurable).
Special tokens (bos/eos/pad ...) are never chosen. The target holds the original
token at chosen positions and ``pad`` elsewhere, as fairseq's masked LM expects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fairseq_ext.data.spans import covered, poisson_span_lengths, word_starts_at


@dataclass(frozen=True)
class MaskConfig:
    mask_prob: float = 0.15
    leave_unmasked_prob: float = 0.1
    random_token_prob: float = 0.1
    unit: str = "subword"  # subword | word | span | identifier
    span_lambda: float = 3.0  # mean span length in words, for unit="span"


def choose_positions(tokens: np.ndarray, cfg: MaskConfig, is_word_start: np.ndarray, special: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Boolean per position: chosen for prediction. Never a special token.

    >>> special = np.array([True, True, True, False, False, False])
    >>> t = np.array([0, 3, 4, 5, 3, 2])
    >>> cfg = MaskConfig(mask_prob=1.0)
    >>> choose_positions(t, cfg, np.ones(6, bool), special, np.random.default_rng(0)).astype(int).tolist()
    [0, 1, 1, 1, 1, 0]
    """
    candidates = ~special[tokens]
    if cfg.unit == "subword":
        starts = candidates
    else:  # a word starts at a word-start token, or right after a special token
        starts = word_starts_at(tokens, is_word_start, special)
        starts[0] = True
        starts &= candidates
    word_pos = np.flatnonzero(starts)
    if word_pos.size == 0:
        return np.zeros(tokens.size, dtype=bool)
    # as fairseq: the expected count, rounded at random
    n = min(word_pos.size, int(cfg.mask_prob * word_pos.size + rng.random()))
    if n == 0:  # a short sample can round to nothing (poisson_span_lengths cannot draw 0 words)
        return np.zeros(tokens.size, dtype=bool)
    if cfg.unit == "span":
        lengths = poisson_span_lengths(n, cfg.span_lambda, rng)
        lengths = lengths[lengths > 0]
    else:
        lengths = np.ones(n, dtype=np.int64)
    first = rng.permutation(word_pos.size)[: lengths.size]
    # a chosen unit covers its words up to the next word start (or the next special token)
    bounds = np.append(word_pos, tokens.size)
    return covered(tokens.size, word_pos[first], bounds[np.minimum(first + lengths, word_pos.size)]) & candidates


IDENTIFIER_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENTIFIER_PART = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class IdentifierVocab:
    """Per-vocabulary tables for identifier masking (see :func:`identifier_vocab`)."""

    is_word_start: np.ndarray  # (V,) bool: the token starts a word (the tokenizer family's rule)
    can_start: np.ndarray  # (V,) bool: its text (marker removed) can begin an identifier
    can_continue: np.ndarray  # (V,) bool: its text can be part of one
    surface: np.ndarray  # (V,) int64: the same number for tokens with the same text (``Ġfoo`` and ``foo``)
    excluded: np.ndarray  # (K, W) int64, -1 padded: surface sequences never chosen (keywords)


def identifier_vocab(surfaces: Sequence[str], is_word_start: np.ndarray, special: np.ndarray,
                     excluded: Sequence[Sequence[int]] = ()) -> IdentifierVocab:
    """Tables from each token's text without its word marker (``TokenizerDictionary.word_surfaces()``).

    A token can start an identifier when its text is ``[A-Za-z_][A-Za-z0-9_]*``, and continue one
    when it is ``[A-Za-z0-9_]+`` (ASCII identifiers, as byte-level vocabularies spell them).
    ``excluded``: token sequences that are never chosen, e.g. every spelling of each keyword.
    """
    _texts, surface = np.unique(np.array(list(surfaces), dtype=object), return_inverse=True)
    surface = surface.reshape(-1).astype(np.int64)
    can_start = np.fromiter((IDENTIFIER_START.fullmatch(s) is not None for s in surfaces), bool, len(surfaces))
    can_continue = np.fromiter((IDENTIFIER_PART.fullmatch(s) is not None for s in surfaces), bool, len(surfaces))
    width = max((len(e) for e in excluded), default=1)
    table = np.full((len(excluded), width), -1, dtype=np.int64)
    for row, seq in enumerate(excluded):
        table[row, : len(seq)] = surface[np.asarray(seq, dtype=np.int64)]
    ordinary = ~np.asarray(special[: len(surfaces)], dtype=bool)
    return IdentifierVocab(np.asarray(is_word_start, dtype=bool), can_start & ordinary, can_continue & ordinary,
                           surface, table)


def identifier_runs(tokens: np.ndarray, vocab: IdentifierVocab) -> tuple[np.ndarray, np.ndarray]:
    """(run id per position, -1 outside identifiers; (R, W) rows of the runs' surface ids, -1 padded).

    An identifier is a maximal run of identifier pieces that starts at a word start or after any
    other token and holds no further word start (``Ġfoo _ bar`` is one, ``Ġx Ġ= Ġy`` three); its
    first piece must be able to start one (``1x`` is none). Keyword rows are left out (id -1).
    """
    part = vocab.can_continue[tokens]
    prev_part = np.concatenate([[False], part[:-1]])
    starts = part & (vocab.is_word_start[tokens] | ~prev_part)
    run = np.where(part, np.cumsum(starts) - 1, -1)
    first = np.flatnonzero(starts)  # (R,)
    lengths = np.bincount(run[part], minlength=first.size)
    rows = np.full((first.size, max(int(lengths.max(initial=0)), vocab.excluded.shape[1])), -1, dtype=np.int64)
    where = np.flatnonzero(part)
    rows[run[where], where - first[run[where]]] = vocab.surface[tokens[where]]
    pad = np.full((vocab.excluded.shape[0], rows.shape[1]), -1, dtype=np.int64)
    pad[:, : vocab.excluded.shape[1]] = vocab.excluded
    keyword = (rows[:, None, :] == pad[None, :, :]).all(-1).any(-1)  # (R,)
    keep = vocab.can_start[tokens[first]] & ~keyword
    new_id = np.where(keep, np.cumsum(keep) - 1, -1)
    if not new_id.size:  # no identifier piece at all (a block of punctuation): nothing to look up
        return np.full(tokens.shape, -1, dtype=np.int64), rows[keep]
    return np.where(part, new_id[np.maximum(run, 0)], -1), rows[keep]


def choose_identifiers(tokens: np.ndarray, mask_prob: float, vocab: IdentifierVocab, special: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Boolean per position: every occurrence of identifiers chosen until about ``mask_prob`` is covered.

    Occurrences with the same token sequence are one identifier, whether or not a space came before
    it (``Ġfoo`` and ``foo``: the same text once the word-start marker is removed). Identifiers are taken in random
    order while the tokens they cover stay within ``mask_prob`` of the sample's ordinary tokens;
    the one that would cross it is taken with the probability that makes the expected coverage
    ``mask_prob`` (less when the sample has fewer identifier tokens). CodeT5's masked-identifier
    objective, for an encoder.

    >>> surfaces = ["<s>", "</s>", "x", "=", "y", "+", "1", "if", "foo", "_", "bar", ":"]
    >>> is_start = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1], bool)  # "_" and "bar" continue a word
    >>> special = np.arange(12) < 2
    >>> vocab = identifier_vocab(surfaces, is_start, special, excluded=[[7]])  # "if" is a keyword
    >>> t = np.array([0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 2, 3, 8, 9, 10, 1])  # x = y + 1 if foo_bar: x = foo_bar
    >>> choose_identifiers(t, 0.3, vocab, special, np.random.default_rng(5)).astype(int).tolist()
    [0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]

    Both x and y: 3 of the 15 ordinary tokens; foo_bar (6 more) came next in the random order and
    was taken with probability (4.5 - 3) / 6, here not.
    """
    run, rows = identifier_runs(tokens, vocab)
    chosen = np.zeros(tokens.size, dtype=bool)
    if rows.shape[0] == 0:
        return chosen
    groups, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_identifier = np.bincount(inverse[run[run >= 0]], minlength=groups.shape[0])  # tokens per identifier
    target = mask_prob * int((~special[tokens]).sum())
    order = rng.permutation(groups.shape[0])
    total = np.cumsum(per_identifier[order])
    n = int(np.searchsorted(total, target, side="right"))  # identifiers that fit entirely
    if n < order.size:  # the one that would cross the target: taken with the probability that makes it exact
        crossing = per_identifier[order[n]]
        if rng.random() * crossing < target - (total[n] - crossing):
            n += 1
    picked = np.zeros(groups.shape[0], dtype=bool)
    picked[order[:n]] = True
    chosen[run >= 0] = picked[inverse[run[run >= 0]]]
    return chosen


def mlm_mask(tokens: np.ndarray, cfg: MaskConfig, *, mask_idx: int, pad: int, is_word_start: np.ndarray,
             special: np.ndarray, random_tokens, rng: np.random.Generator,
             identifiers: Optional[IdentifierVocab] = None) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) for one sample; ``identifiers`` is needed for ``unit="identifier"``."""
    if cfg.unit == "identifier":
        chosen = choose_identifiers(tokens, cfg.mask_prob, identifiers, special, rng)
    else:
        chosen = choose_positions(tokens, cfg, is_word_start, special, rng)
    target = np.where(chosen, tokens, pad)
    source = tokens.copy()
    positions = np.flatnonzero(chosen)
    u = rng.random(positions.size)
    to_mask = positions[u < 1.0 - cfg.leave_unmasked_prob - cfg.random_token_prob]
    to_random = positions[(u >= 1.0 - cfg.leave_unmasked_prob - cfg.random_token_prob)
                          & (u < 1.0 - cfg.leave_unmasked_prob)]
    source[to_mask] = mask_idx
    source[to_random] = random_tokens(to_random.size, rng)
    return source, target


def shorten(tokens: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``prob`` keep a random-length prefix (at least 2 tokens), ending as the block did.

    BERT's short-sequence probability: the model also sees short inputs.
    """
    if prob <= 0 or tokens.size <= 3 or rng.random() >= prob:
        return tokens
    keep = int(rng.integers(2, tokens.size))
    return np.concatenate([tokens[: keep - 1], tokens[-1:]])

