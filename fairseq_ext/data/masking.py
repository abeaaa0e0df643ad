"""Masked-LM masking as a pure, vectorised numpy function with an explicit generator.

BERT/RoBERTa dynamic masking: choose ``mask_prob`` of the units (tokens, whole
words, or Poisson spans of whole words), then replace 80% of the chosen tokens
by the mask token, 10% by a random token and leave 10% unchanged (configurable).
Special tokens (bos/eos/pad ...) are never chosen. The target holds the original
token at chosen positions and ``pad`` elsewhere, as fairseq's masked LM expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairseq_ext.data.noising import NoiseConfig, span_lengths


@dataclass(frozen=True)
class MaskConfig:
    mask_prob: float = 0.15
    leave_unmasked_prob: float = 0.1
    random_token_prob: float = 0.1
    unit: str = "subword"  # subword | word | span
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
        starts = is_word_start[tokens].copy()
        starts[1:] |= special[tokens[:-1]]
        starts[0] = True
        starts &= candidates
    word_pos = np.flatnonzero(starts)
    if word_pos.size == 0:
        return np.zeros(tokens.size, dtype=bool)
    # as fairseq: the expected count, rounded at random
    n = min(word_pos.size, int(cfg.mask_prob * word_pos.size + rng.random()))
    if cfg.unit == "span":
        lengths = span_lengths(n, NoiseConfig(mask_length="span-poisson", poisson_lambda=cfg.span_lambda), rng)
        lengths = lengths[lengths > 0]
    else:
        lengths = np.ones(n, dtype=np.int64)
    first = rng.permutation(word_pos.size)[: lengths.size]
    # a chosen unit covers its words up to the next word start (or the next special token)
    bounds = np.append(word_pos, tokens.size)
    delta = np.zeros(tokens.size + 1, dtype=np.int64)
    np.add.at(delta, word_pos[first], 1)
    np.add.at(delta, bounds[np.minimum(first + lengths, word_pos.size)], -1)
    return (np.cumsum(delta[:-1]) > 0) & candidates


def mlm_mask(tokens: np.ndarray, cfg: MaskConfig, *, mask_idx: int, pad: int, is_word_start: np.ndarray,
             special: np.ndarray, random_tokens, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) for one sample."""
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

