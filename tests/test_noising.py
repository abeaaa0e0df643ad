"""BART noise: statistics over many samples, special tokens never masked, exact reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from fairseq_ext.data.noising import NoiseConfig, bart_noise, mask_spans, permute_sentences, word_start_positions

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


def test_replace_length_one_collapses_each_span_to_one_mask():
    rng = np.random.default_rng(3)
    cfg = NoiseConfig(mask_ratio=0.3, random_ratio=0.0, permute_sentence_ratio=0.0, replace_length=1)
    for i in range(100):
        block = make_block(rng)
        out = noise(block, cfg, [i])
        assert out.size < block.size
        kept = out[out != MASK]
        # every kept token appears in the original order (masking only removes and replaces)
        pos = 0
        for t in kept:
            pos = int(np.flatnonzero(block[pos:] == t)[0]) + pos + 1


def test_special_tokens_are_never_masked_or_moved_out_of_place():
    rng = np.random.default_rng(4)
    cfg = NoiseConfig(mask_ratio=0.5, random_ratio=0.2, insert_ratio=0.1, rotate_ratio=0.0)
    for i in range(300):
        block = make_block(rng)
        out = noise(block, cfg, [i])
        assert out[0] == BOS and out[-1] == EOS
        # eos tokens survive or are covered only as whole words; bos never appears elsewhere
        assert (out[1:] != BOS).all()
        assert not np.isin(out[1:-1], [PAD, UNK]).any()


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
