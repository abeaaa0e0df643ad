"""BART noise as pure, vectorised numpy functions with an explicit generator.

A block is ``[bos] sentence eos sentence eos ... eos`` (the last eos appended
by the dataset). ``is_word_start`` is a boolean array over the *vocabulary*
(see ``TokenizerDictionary.word_starts``); a token right after a special token
(bos, a sentence's eos) always starts a word, whatever its spelling, so the
first word of a sentence encoded without a leading space is still a word.

Every function takes ``rng: numpy.random.Generator`` and never touches global
random state; a dataset seeds it from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fairseq_ext.data.spans import covered, poisson_span_lengths, word_starts_at


@dataclass(frozen=True)
class NoiseConfig:
    mask_ratio: float = 0.3
    random_ratio: float = 0.1
    insert_ratio: float = 0.0
    rotate_ratio: float = 0.0
    permute_sentence_ratio: float = 1.0
    replace_length: int = 1  # -1: mask every token of a span, 0: delete it, 1: one mask for the span
    mask_length: str = "span-poisson"  # subword | word | span-poisson
    poisson_lambda: float = 3.5


def word_start_positions(tokens: np.ndarray, is_word_start: np.ndarray, special: np.ndarray) -> np.ndarray:
    """Boolean per position: does a word start here? Never at the first or last position.

    >>> ws = np.array([True, True, True, False, True])   # vocab: 0 bos, 1 eos, 2 "Ġa", 3 "b", 4 "c"
    >>> sp = np.array([True, True, False, False, False])
    >>> word_start_positions(np.array([0, 4, 3, 1, 3, 2, 1]), ws, sp).astype(int).tolist()
    [0, 1, 0, 1, 1, 1, 0]
    """
    starts = word_starts_at(tokens, is_word_start, special)
    starts[0] = starts[-1] = False
    return starts


def permute_sentences(tokens: np.ndarray, eos: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Shuffle ``ratio`` of the sentences (each ends with eos) between bos and the final eos.

    >>> t = np.array([0, 5, 6, 2, 7, 2, 8, 9, 2, 2])
    >>> out = permute_sentences(t, eos=2, ratio=1.0, rng=np.random.default_rng(0))
    >>> sorted(p.tolist() for p in np.split(out[1:-1], np.flatnonzero(out[1:-1] == 2)[:-1] + 1))
    [[5, 6, 2], [7, 2], [8, 9, 2]]
    """
    body = tokens[1:-1]
    ends = np.flatnonzero(body == eos) + 1
    if ends.size == 0 or ends[-1] != body.size:
        ends = np.append(ends, body.size)
    n = ends.size
    if n < 2 or ratio <= 0:
        return tokens
    starts = np.concatenate([[0], ends[:-1]])
    chosen = rng.permutation(n)[: math.ceil(n * ratio)]
    order = np.arange(n)
    order[chosen] = chosen[rng.permutation(chosen.size)]
    pieces = [body[starts[i]:ends[i]] for i in order]
    return np.concatenate([tokens[:1], *pieces, tokens[-1:]])


def span_lengths(n_words: int, cfg: NoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Span lengths in words whose sum is ``n_words``; zeros are insertions (span-poisson)."""
    if cfg.mask_length != "span-poisson":
        return np.ones(n_words, dtype=np.int64)
    return poisson_span_lengths(n_words, cfg.poisson_lambda, rng)


def mask_spans(tokens: np.ndarray, starts: np.ndarray, cfg: NoiseConfig, mask_idx: int,
               random_tokens, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Mask whole-word spans covering ``mask_ratio`` of the words.

    Returns the noised tokens and the number of zero-length spans (insertions
    still owed). ``random_tokens(n, rng)`` draws replacement ids.
    """
    word_pos = np.flatnonzero(starts)
    n_to_mask = math.ceil(word_pos.size * cfg.mask_ratio)
    if n_to_mask == 0:
        return tokens, 0
    lengths = span_lengths(n_to_mask, cfg, rng)
    inserts = int((lengths == 0).sum())
    lengths = lengths[lengths > 0]
    if lengths.size == 0:
        return tokens, inserts
    chosen = rng.permutation(word_pos.size)[: lengths.size]
    # word boundaries, with the final position acting as the end of the last word
    bounds = np.append(word_pos, tokens.size - 1)
    span_start = word_pos[chosen]
    span_end = bounds[np.minimum(chosen + lengths, word_pos.size)]
    spanned = covered(tokens.size, span_start, span_end)
    inner = covered(tokens.size, span_start + 1, span_end)  # covered, but not the head of a span
    head = spanned & ~inner
    out = tokens.copy()
    if cfg.replace_length == 0:
        keep = ~spanned
    elif cfg.replace_length == 1:
        keep = ~inner
        _mask_positions(out, np.flatnonzero(head), cfg.random_ratio, mask_idx, random_tokens, rng)
    else:  # -1: every covered token becomes mask / random
        keep = np.ones(tokens.size, dtype=bool)
        _mask_positions(out, np.flatnonzero(spanned), cfg.random_ratio, mask_idx, random_tokens, rng)
    return out[keep], inserts


def _mask_positions(out, positions, random_ratio, mask_idx, random_tokens, rng) -> None:
    rand = rng.random(positions.size) < random_ratio
    out[positions] = mask_idx
    out[positions[rand]] = random_tokens(int(rand.sum()), rng)


def insert_noise(tokens: np.ndarray, ratio: float, cfg: NoiseConfig, mask_idx: int, random_tokens,
                 rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Insert ``count`` (default ``ceil(len * ratio)``) mask/random tokens between bos and the final eos."""
    n = math.ceil(tokens.size * ratio) if count is None else count
    if n == 0:
        return tokens
    total = tokens.size + n
    noise_pos = rng.permutation(total - 2)[:n] + 1
    is_noise = np.zeros(total, dtype=bool)
    is_noise[noise_pos] = True
    out = np.empty(total, dtype=tokens.dtype)
    out[~is_noise] = tokens
    n_random = math.ceil(n * cfg.random_ratio)
    out[noise_pos[n_random:]] = mask_idx
    out[noise_pos[:n_random]] = random_tokens(n_random, rng)
    return out


def rotate(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate the body so it starts at a random token; bos and the final eos stay."""
    offset = int(rng.integers(1, max(1, tokens.size - 1) + 1))
    return np.concatenate([tokens[:1], tokens[offset:-1], tokens[1:offset], tokens[-1:]])


def bart_noise(tokens: np.ndarray, cfg: NoiseConfig, *, eos: int, mask_idx: int, is_word_start: np.ndarray,
               special: np.ndarray, random_tokens, rng: np.random.Generator) -> np.ndarray:
    """All of BART's noise, in fairseq's order: permute, mask, insert, rotate."""
    if cfg.permute_sentence_ratio > 0:
        tokens = permute_sentences(tokens, eos, cfg.permute_sentence_ratio, rng)
    inserts = 0
    if cfg.mask_ratio > 0:
        if cfg.mask_length == "subword":
            starts = np.ones(tokens.size, dtype=bool)
            starts[0] = starts[-1] = False
        else:
            starts = word_start_positions(tokens, is_word_start, special)
        tokens, inserts = mask_spans(tokens, starts, cfg, mask_idx, random_tokens, rng)
    if inserts:  # one token per zero-length span (a ratio would round up: ceil(25 * (7 / 25)) == 8)
        tokens = insert_noise(tokens, 0.0, cfg, mask_idx, random_tokens, rng, count=inserts)
    if cfg.insert_ratio > 0:
        tokens = insert_noise(tokens, cfg.insert_ratio, cfg, mask_idx, random_tokens, rng)
    if cfg.rotate_ratio > 0 and rng.random() < cfg.rotate_ratio:
        tokens = rotate(tokens, rng)
    return tokens
