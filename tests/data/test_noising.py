"""BART noise: exact outputs for fixed seeds, properties computed independently, statistics, reproducibility."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from fairseq_ext.data.noising import (
    NoiseConfig,
    bart_noise,
    mask_spans,
    permute_sentences,
    rotate,
    word_start_positions,
)

BOS, PAD, EOS, UNK, MASK = 0, 1, 2, 3, 4
VOCAB = 200
SPECIAL = np.zeros(VOCAB, dtype=bool)
SPECIAL[:5] = True
# even ids start a word ("Ġxx"), odd ids continue one
WORD_START = (np.arange(VOCAB) % 2 == 0) | SPECIAL


def random_tokens(n, rng):
    return rng.integers(5, VOCAB, size=n)


def make_block(rng, n_sentences=6):
    """[bos] sentence eos ... eos, sentences made of 1-3 token words."""
    out = [BOS]
    for _ in range(n_sentences):
        for _ in range(rng.integers(4, 12)):
            word = [rng.integers(3, VOCAB // 2) * 2] + [rng.integers(3, VOCAB // 2) * 2 + 1] * rng.integers(0, 3)
            out += word
        out.append(EOS)
    out.append(EOS)
    return np.array(out, dtype=np.int64)


def noise(block, cfg, seed):
    return bart_noise(block, cfg, eos=EOS, mask_idx=MASK, is_word_start=WORD_START, special=SPECIAL,
                      random_tokens=random_tokens, rng=np.random.default_rng(seed))


def test_same_seed_same_sample_different_seed_differs():
    block = make_block(np.random.default_rng(0))
    cfg = NoiseConfig()
    assert np.array_equal(noise(block, cfg, [1, 2, 3]), noise(block, cfg, [1, 2, 3]))
    assert not np.array_equal(noise(block, cfg, [1, 2, 3]), noise(block, cfg, [1, 2, 4]))


def test_masked_share_of_words_is_the_mask_ratio():
    """With replace-length -1 every masked token stays visible as <mask>: count words covered."""
    rng = np.random.default_rng(1)
    cfg = NoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=-1,
                      mask_length="word")
    covered, words = 0, 0
    for i in range(400):
        block = make_block(rng)
        starts = word_start_positions(block, WORD_START, SPECIAL)
        out = noise(block, cfg, [0, 0, i])
        assert out.size == block.size
        masked_starts = (out == MASK) & starts
        covered += int(masked_starts.sum())
        words += int(starts.sum())
    assert covered / words == pytest.approx(0.3, abs=0.02)


def test_mean_span_length_follows_poisson_lambda():
    rng = np.random.default_rng(2)
    cfg = NoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=-1,
                      poisson_lambda=3.5)
    from fairseq_ext.data.noising import span_lengths

    lengths = np.concatenate([span_lengths(40, cfg, rng) for _ in range(500)])
    # budget trimming shortens the last span of each draw a little
    assert lengths.mean() == pytest.approx(3.5, rel=0.15)
    assert (lengths == 0).mean() == pytest.approx(np.exp(-3.5), abs=0.02)


def words(block):
    """(start, end) of every word between bos and the final eos, from the word-start rule alone."""
    starts = np.flatnonzero(word_start_positions(block, WORD_START, SPECIAL))
    return list(zip(starts.tolist(), np.append(starts[1:], block.size - 1).tolist()))


def test_replace_length_one_collapses_each_masked_word_to_one_mask():
    """Computed independently: the same seed with replace-length -1 shows which words were covered;
    replace-length 1 must turn each of them into exactly one <mask> and keep every other token."""
    rng = np.random.default_rng(3)
    one = NoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=1,
                      mask_length="word")
    every = replace(one, replace_length=-1)
    for i in range(200):
        block = make_block(rng)
        covered = noise(block, every, [i]) == MASK  # the same draws choose the same words
        expected = [BOS]
        for start, end in words(block):
            assert covered[start:end].all() or not covered[start:end].any()  # whole words only
            expected += [MASK] if covered[start] else block[start:end].tolist()
        expected.append(EOS)
        assert noise(block, one, [i]).tolist() == expected
        n_words = len(words(block))
        assert sum(covered[s] for s, _ in words(block)) == math.ceil(0.3 * n_words)


def mask_runs(covered):
    """(start, end) of each maximal run of True."""
    edges = np.diff(np.concatenate([[0], covered.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def test_poisson_spans_each_become_one_mask():
    """Spans of several words: each maximal covered run of k words becomes 1..k masks (adjacent spans
    stay separate), at the run's place, and every uncovered token is kept in order."""
    rng = np.random.default_rng(9)
    one = NoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=1)
    every = replace(one, replace_length=-1)
    spans_seen = runs_seen = 0
    for i in range(200):
        block = make_block(rng)
        starts = word_start_positions(block, WORD_START, SPECIAL)
        out_every, inserts_every = mask_spans(block, starts, every, MASK, random_tokens, np.random.default_rng([i]))
        out_one, inserts_one = mask_spans(block, starts, one, MASK, random_tokens, np.random.default_rng([i]))
        assert inserts_every == inserts_one
        covered = out_every == MASK
        expected_pattern, pos = [], 0  # walk the block run by run
        for start, end in mask_runs(covered):
            expected_pattern.append(block[pos:start].tolist())
            expected_pattern.append(int(starts[start:end].sum()))  # words in the run
            pos = end
        expected_pattern.append(block[pos:].tolist())
        got, j = out_one.tolist(), 0
        for part in expected_pattern:
            if isinstance(part, list):
                assert got[j:j + len(part)] == part
                j += len(part)
            else:
                n_masks = 0
                while j < len(got) and got[j] == MASK:
                    n_masks, j = n_masks + 1, j + 1
                assert 1 <= n_masks <= part
                spans_seen += n_masks
                runs_seen += 1
        assert j == len(got)
    assert spans_seen > runs_seen  # adjacent spans were met, and each kept its own mask


def test_each_zero_length_span_inserts_exactly_one_token():
    """span-poisson draws of 0 words are insertions; bart_noise owes exactly that many."""
    rng = np.random.default_rng(8)
    cfg = NoiseConfig(mask_ratio=0.4, random_ratio=0.0, permute_sentence_ratio=0.0, poisson_lambda=1.0)
    with_inserts = 0
    for i in range(500):
        block = make_block(rng)
        starts = word_start_positions(block, WORD_START, SPECIAL)
        masked, inserts = mask_spans(block, starts, cfg, MASK, random_tokens, np.random.default_rng([i]))
        out = noise(block, cfg, [i])
        assert out.size == masked.size + inserts, (i, out.size, masked.size, inserts)
        with_inserts += inserts > 0
    assert with_inserts > 400  # lambda 1: about a third of the spans are empty


# Goldens: the exact noised block for a fixed seed. Checked by hand when written (see the comments); a
# change here changes every sample of every training run, so it must be deliberate.
GOLDEN_BLOCK = np.array([BOS, 10, 11, 12, 14, 15, 15, EOS, 16, 18, 20, 21, EOS, 22, 24, 26, 28, EOS, EOS])
# words: [10 11] [12] [14 15 15] [eos] [16] [18] [20 21] [eos] [22] [24] [26] [28] [eos]: 13, 30% -> 4 masked
GOLDEN = {
    # BART's settings; no permutation by chance; spans [20 21][eos] and [28][eos] -> one mask each
    "default": (NoiseConfig(), [0, 1, 2],
                [0, 10, 11, 12, 14, 15, 15, 2, 16, 18, 4, 22, 24, 26, 4, 2]),
    # sentences 2, 1, 3; span [16][18][20 21] -> random token 77 (mask-random 0.1); [28] -> mask
    "default-seed-3": (NoiseConfig(), [3],
                       [0, 77, 2, 10, 11, 12, 14, 15, 15, 2, 22, 24, 26, 4, 2, 2]),
    # replace-length 0: covered words vanish ([20 21], [28], the last sentence's eos; spans overlapped)
    "delete": (NoiseConfig(replace_length=0, permute_sentence_ratio=0.0), [0, 1, 2],
               [0, 10, 11, 12, 14, 15, 15, 2, 16, 18, 2, 22, 24, 26, 2]),
    # replace-length -1, whole words: [12] [22] [24] [eos] -> a mask per token
    "every-token": (NoiseConfig(replace_length=-1, permute_sentence_ratio=0.0, mask_length="word"), [0, 1, 2],
                    [0, 10, 11, 4, 14, 15, 15, 2, 16, 18, 20, 21, 2, 4, 4, 26, 28, 4, 2]),
    # subword: 17 positions, ceil(5.1) = 6 single tokens masked (no Poisson spans for subword)
    "subword": (NoiseConfig(mask_length="subword", permute_sentence_ratio=0.0, random_ratio=0.0), [0, 1, 2],
                [0, 10, 4, 12, 14, 15, 15, 2, 4, 4, 4, 21, 4, 4, 24, 26, 28, 2, 2]),
    # rotation: the body starts at its 6th token (15), bos and the final eos stay
    "rotate": (NoiseConfig(mask_ratio=0.0, permute_sentence_ratio=0.0, rotate_ratio=1.0), [0, 1, 2],
               [0, 15, 2, 16, 18, 20, 21, 2, 22, 24, 26, 28, 2, 10, 11, 12, 14, 15, 2]),
    # insertion: ceil(19 * 0.2) = 4 tokens, ceil(4 * 0.5) = 2 of them random (113, 38), never first or last
    "insert": (NoiseConfig(mask_ratio=0.0, permute_sentence_ratio=0.0, insert_ratio=0.2, random_ratio=0.5),
               [0, 1, 2], [0, 10, 113, 11, 12, 4, 14, 15, 15, 38, 2, 16, 18, 20, 21, 2, 22, 24, 26, 28, 2, 4, 2]),
    "permute": (NoiseConfig(mask_ratio=0.0), [3],
                [0, 16, 18, 20, 21, 2, 10, 11, 12, 14, 15, 15, 2, 22, 24, 26, 28, 2, 2]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_outputs_for_a_fixed_seed(name):
    cfg, seed, expected = GOLDEN[name]
    assert noise(GOLDEN_BLOCK, cfg, seed).tolist() == expected


def test_rotation_is_a_cyclic_shift_of_the_body_and_reaches_every_shift():
    block = np.array([BOS, *range(10, 20), EOS])
    body = block[1:-1].tolist()
    shifts = Counter()
    for i in range(600):
        out = rotate(block, np.random.default_rng(i))
        assert out[0] == BOS and out[-1] == EOS and out.size == block.size
        k = (len(body) - out[1:-1].tolist().index(body[0])) % len(body)  # the body starts at body[k]
        assert out[1:-1].tolist() == body[k:] + body[:k]  # nothing lost, duplicated or reordered
        shifts[k] += 1
    assert sorted(shifts) == list(range(len(body)))  # every start, the unrotated one included


def test_rotate_ratio_is_the_share_of_rotated_samples():
    """--rotate p: a sample is rotated with probability p (offset 1 and len-1 leave it as it was, as in
    fairseq, so 2 of the len-1 offsets of an applied rotation look unchanged)."""
    block = np.array([BOS, *range(10, 20), EOS])  # 12 tokens: 11 offsets, 2 of them the identity
    for p in (0.0, 0.5, 1.0):
        cfg = NoiseConfig(mask_ratio=0.0, permute_sentence_ratio=0.0, rotate_ratio=p)
        changed = np.mean([not np.array_equal(noise(block, cfg, [i]), block) for i in range(2000)])
        assert changed == pytest.approx(p * 9 / 11, abs=0.03)


def test_insertion_adds_exactly_the_share_and_keeps_the_sequence():
    rng = np.random.default_rng(10)
    for i in range(200):
        block = make_block(rng)
        for ratio, random_ratio in ((0.1, 0.0), (0.3, 0.5)):
            cfg = NoiseConfig(mask_ratio=0.0, permute_sentence_ratio=0.0, insert_ratio=ratio,
                              random_ratio=random_ratio)
            out = noise(block, cfg, [i])
            n = math.ceil(block.size * ratio)
            assert out.size == block.size + n and out[0] == BOS and out[-1] == EOS
            # the inserted tokens are the ones not matched by walking the block in order
            inserted, j = [], 0
            for t in out.tolist():
                if j < block.size and t == block[j]:
                    j += 1
                else:
                    inserted.append(t)
            assert j == block.size and len(inserted) == n
            n_random = sum(t != MASK for t in inserted)
            if random_ratio == 0:
                assert n_random == 0
            else:  # the greedy walk may take a random token for a block token: count from the masks
                assert int((out == MASK).sum()) == n - math.ceil(n * random_ratio)


def test_random_replacement_share():
    rng = np.random.default_rng(5)
    cfg = NoiseConfig(mask_ratio=0.3, random_ratio=0.1, permute_sentence_ratio=0.0, replace_length=-1,
                      mask_length="subword")
    masked = replaced = 0
    for i in range(300):
        block = make_block(rng)
        out = noise(block, cfg, [i])
        changed = out != block
        masked += int((out == MASK).sum())
        replaced += int((changed & (out != MASK)).sum())
    assert replaced / (masked + replaced) == pytest.approx(0.1, abs=0.03)


def test_sentence_permutation_happens_and_keeps_every_sentence():
    rng = np.random.default_rng(6)
    moved = 0
    for i in range(200):
        block = make_block(rng)
        out = permute_sentences(block, EOS, 1.0, np.random.default_rng(i))
        split = lambda b: sorted(map(tuple, np.split(b[1:-1], np.flatnonzero(b[1:-1] == EOS)[:-1] + 1)))  # noqa: E731
        assert split(out) == split(block)
        moved += not np.array_equal(out, block)
    assert moved > 190  # 6 sentences: unchanged only by chance (1/720)


def test_whole_words_are_masked_together():
    rng = np.random.default_rng(7)
    cfg = NoiseConfig(mask_ratio=0.4, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=-1,
                      mask_length="word")
    for i in range(200):
        block = make_block(rng)
        out = noise(block, cfg, [i])
        starts = word_start_positions(block, WORD_START, SPECIAL)
        word_id = np.cumsum(starts)
        for w in np.unique(word_id[out == MASK]):
            inside = (word_id == w) & ~SPECIAL[block]
            assert (out[inside] == MASK).all()  # a word is masked whole or not at all


def test_first_word_of_a_sentence_counts_as_a_word_even_without_a_space_marker():
    tokens = np.array([BOS, 7, 9, EOS, 7, 10, EOS, EOS])  # odd id 7 "continues" but follows bos/eos
    starts = word_start_positions(tokens, WORD_START, SPECIAL)
    assert starts.tolist() == [False, True, False, True, True, True, True, False]


def test_mask_spans_with_nothing_to_mask():
    tokens = np.array([BOS, EOS])
    out, inserts = mask_spans(tokens, np.zeros(2, bool), NoiseConfig(), MASK, random_tokens, np.random.default_rng(0))
    assert out.tolist() == [BOS, EOS] and inserts == 0
