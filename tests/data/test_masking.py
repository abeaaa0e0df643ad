"""Masked-LM masking: statistics, whole words for every tokenizer family, specials, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from fairseq_ext.data.masking import MaskConfig, choose_positions, mlm_mask, shorten
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer

BOS, PAD, EOS, UNK, MASK = 0, 1, 2, 3, 4
VOCAB = 300
SPECIAL = np.zeros(VOCAB, dtype=bool)
SPECIAL[:5] = True
WORD_START = (np.arange(VOCAB) % 3 == 0) | SPECIAL  # ids divisible by 3 start a word


def random_tokens(n, rng):
    return rng.integers(5, VOCAB, size=n)


def block(rng, n=120):
    body = rng.integers(5, VOCAB, size=n)
    body[rng.random(n) < 0.1] = EOS
    return np.concatenate([[BOS], body, [EOS]])


def mask(tokens, cfg, seed):
    return mlm_mask(tokens, cfg, mask_idx=MASK, pad=PAD, is_word_start=WORD_START, special=SPECIAL,
                    random_tokens=random_tokens, rng=np.random.default_rng(seed))


def test_fifteen_percent_chosen_and_80_10_10():
    rng = np.random.default_rng(0)
    chosen = total = masked = randomized = kept = 0
    for i in range(500):
        t = block(rng)
        src, tgt = mask(t, MaskConfig(), [i])
        pick = tgt != PAD
        chosen += int(pick.sum())
        total += int((~SPECIAL[t]).sum())
        masked += int((src[pick] == MASK).sum())
        kept += int((src[pick] == t[pick]).sum())
        randomized += int(((src[pick] != MASK) & (src[pick] != t[pick])).sum())
        assert (src[~pick] == t[~pick]).all()  # only chosen positions change
        assert (tgt[pick] == t[pick]).all()
    assert chosen / total == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert randomized / chosen == pytest.approx(0.1, abs=0.02)
    assert kept / chosen == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("unit", ["subword", "word", "span"])
@pytest.mark.parametrize("mask_prob", [0.5, 1.0])
def test_special_tokens_are_never_chosen(unit, mask_prob):
    """pad, unk, bos, eos and <mask> itself, wherever they sit, are never chosen nor changed."""
    rng = np.random.default_rng(1)
    for i in range(200):
        t = block(rng)
        where = rng.random(t.size) < 0.25
        t[where] = rng.choice([BOS, PAD, EOS, UNK, MASK], size=int(where.sum()))
        chosen = choose_positions(t, MaskConfig(mask_prob=mask_prob, unit=unit), WORD_START, SPECIAL,
                                  np.random.default_rng(i))
        assert not chosen[SPECIAL[t]].any()
        if mask_prob == 1.0 and unit != "span":  # and everything else is (random spans overlap)
            assert chosen[~SPECIAL[t]].all()
        src, tgt = mask(t, MaskConfig(mask_prob=mask_prob, unit=unit), [i])
        assert (src[SPECIAL[t]] == t[SPECIAL[t]]).all() and (tgt[SPECIAL[t]] == PAD).all()


# The exact (source, target) for a fixed seed, checked by hand when written. Words (ids divisible by 3
# start one; a token after a special token starts one too): [12 13] [15] unk [18 20] [21] eos [24] pad
# [27 28] <mask> [30 31] eos: 11 ordinary tokens, 7 words; 0.3 of them rounded at random.
GOLDEN_TOKENS = np.array([BOS, 12, 13, 15, UNK, 18, 20, 21, EOS, 24, PAD, 27, 28, MASK, 30, 31, EOS])
GOLDEN = {
    # 4 of 11 subwords, all four become <mask> (80%)
    "subword": ([0, 1], [0, 4, 4, 15, 3, 18, 20, 4, 2, 24, 1, 4, 28, 4, 30, 31, 2],
                [1, 12, 13, 1, 1, 1, 1, 21, 1, 1, 1, 27, 1, 1, 1, 1, 1]),
    # 2 of 7 words: [15] and [21]
    "word": ([0, 1], [0, 12, 13, 4, 3, 18, 20, 4, 2, 24, 1, 27, 28, 4, 30, 31, 2],
             [1, 1, 1, 15, 1, 1, 1, 21, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    # a span of two words reaches the last word [30 31], masked whole
    "span": ([5], [0, 12, 13, 15, 3, 18, 20, 21, 2, 24, 1, 27, 28, 4, 4, 4, 2],
             [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 30, 31, 1]),
}


@pytest.mark.parametrize("unit", sorted(GOLDEN))
def test_golden_outputs_for_a_fixed_seed(unit):
    seed, source, target = GOLDEN[unit]
    src, tgt = mask(GOLDEN_TOKENS, MaskConfig(mask_prob=0.3, unit=unit), seed)
    assert (src.tolist(), tgt.tolist()) == (source, target)


@pytest.mark.parametrize("unit", ["word", "span"])
def test_whole_words_are_chosen_together(unit):
    rng = np.random.default_rng(2)
    for i in range(200):
        t = block(rng)
        _src, tgt = mask(t, MaskConfig(mask_prob=0.3, unit=unit), [i])
        starts = WORD_START[t].copy()
        starts[1:] |= SPECIAL[t[:-1]]
        word = np.cumsum(starts)
        pick = tgt != PAD
        for w in np.unique(word[pick]):
            inside = (word == w) & ~SPECIAL[t]
            assert pick[inside].all()


@pytest.mark.parametrize("unit", ["subword", "word", "span"])
def test_a_sample_too_short_for_one_unit(unit):
    """A sample of two words at mask_prob 0.15 chooses nothing about 70% of the time: span masking crashed."""
    t = np.array([BOS, 12, 15, EOS])
    picks = [int(mask(t, MaskConfig(unit=unit), [i])[1].__ne__(PAD).sum()) for i in range(100)]
    assert 0 in picks and max(picks) >= 1


def test_spans_are_longer_than_words():
    rng = np.random.default_rng(3)
    runs = {"word": [], "span": []}
    for unit in runs:
        for i in range(200):
            t = block(rng)
            pick = choose_positions(t, MaskConfig(mask_prob=0.2, unit=unit), WORD_START, SPECIAL,
                                    np.random.default_rng(i))
            edges = np.diff(np.concatenate([[0], pick.astype(int), [0]]))
            runs[unit] += (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()
    assert np.mean(runs["span"]) > 1.5 * np.mean(runs["word"])


def test_reproducible_per_seed():
    t = block(np.random.default_rng(4))
    a, b, c = mask(t, MaskConfig(), [1, 2]), mask(t, MaskConfig(), [1, 2]), mask(t, MaskConfig(), [1, 3])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_short_sequences():
    rng = np.random.default_rng(5)
    t = block(rng)
    lengths = [shorten(t, 0.5, np.random.default_rng(i)).size for i in range(400)]
    short = [n for n in lengths if n < t.size]
    assert len(short) / 400 == pytest.approx(0.5, abs=0.08)
    assert min(lengths) >= 2 and all(shorten(t, 1.0, np.random.default_rng(i))[-1] == EOS for i in range(50))
    assert np.array_equal(shorten(t, 0.0, rng), t)


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram"])
def test_whole_word_units_for_every_tokenizer_family(family, bpe_dir, bert_dir, unigram_dir):
    src = {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir}[family]
    tok = load_tokenizer(src)
    d = TokenizerDictionary.from_tokenizer(tok)
    special = np.zeros(len(d), dtype=bool)
    special[d.special_ids] = True
    text = "students explains tokenizers programs"
    ids = tok(text)["input_ids"]  # with the family's own specials around
    # and the family's pad, unk and mask ids inside, as real data can hold them (unk surely)
    inner = [d.pad(), d.unk(), d.mask_index]
    ids = ids[:2] + inner[:1] + ids[2:3] + inner[1:] + ids[3:]
    t = np.array(ids)
    pick = choose_positions(t, MaskConfig(mask_prob=1.0, unit="word"), d.word_starts(), special,
                            np.random.default_rng(0))
    starts = d.word_starts()[t].copy()
    starts[1:] |= special[t[:-1]]
    n_words = int((starts & ~special[t]).sum())
    assert n_words == 4, tok.convert_ids_to_tokens(ids)
    assert pick[~special[t]].all() and not pick[special[t]].any()


# -- identifier masking ------------------------------------------------------------------------------
# A byte-level-like vocabulary: every piece with a word-start marker (Ġ, after a space) and without.
PIECES = ["foo", "bar", "x", "_", "1", "2", "if", "in", "not", "(", ")", "=", ".", ":"]
KEYWORDS = ("if", "in", "not")
ID_SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [m + p for p in PIECES for m in ("\u0120", "")]
ID_SPECIAL = np.arange(len(ID_SYMBOLS)) < 5
ID_WORD_START = np.array([s.startswith("\u0120") for s in ID_SYMBOLS]) | ID_SPECIAL
ID_SURFACES = [s.removeprefix("\u0120") for s in ID_SYMBOLS]


def ident_vocab():
    from fairseq_ext.data.masking import identifier_vocab

    excluded = [[ID_SYMBOLS.index(m + k)] for k in KEYWORDS for m in ("\u0120", "")]
    return identifier_vocab(ID_SURFACES, ID_WORD_START, ID_SPECIAL, excluded)


def ids_of(text: str) -> np.ndarray:
    """'Ġfoo _ bar Ġ= ...' -> token ids."""
    return np.array([ID_SYMBOLS.index(t) for t in text.split()])


def ident_mask(tokens, prob, seed):
    return mlm_mask(tokens, MaskConfig(mask_prob=prob, unit="identifier"), mask_idx=MASK, pad=PAD,
                    is_word_start=ID_WORD_START, special=ID_SPECIAL,
                    random_tokens=lambda n, rng: rng.integers(5, len(ID_SYMBOLS), size=n),
                    rng=np.random.default_rng(seed), identifiers=ident_vocab())


def occurrences(tokens):
    """{identifier text: [positions of each occurrence]} found from the decoded text (a regex), not the tables."""
    import re

    text, starts = "", []
    for t in tokens:
        sym = ID_SYMBOLS[t]
        if ID_SPECIAL[t]:
            sym = " \x00 "  # a special token separates words
        starts.append(len(text) + sym.startswith("\u0120"))
        text += sym.replace("\u0120", " ")
    starts = np.array(starts + [len(text)])
    found = {}
    for m in re.finditer(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*", text):
        first, last = np.searchsorted(starts, m.start()), np.searchsorted(starts, m.end())
        found.setdefault(m.group(), []).append(list(range(first, last)))
    return found


# The exact (source, target) for a fixed seed, checked by hand: "foo_bar = x ( foo_bar ) if x . foo" holds
# 14 ordinary tokens; its identifiers are foo_bar (6 tokens in all), x (2) and foo (1: after "." it is its
# own identifier), "if" is a keyword; 0.3 * 14 = 4.2. The random order takes x and foo (3 tokens), then
# foo_bar would reach 9 > 4.2 and is taken with probability 1.2 / 6: not here. All three become <mask>.
GOLDEN_IDENT = "<s> Ġfoo _ bar Ġ= Ġx Ġ( foo _ bar ) Ġif Ġx . foo </s>"


def test_identifier_golden_for_a_fixed_seed():
    t = ids_of(GOLDEN_IDENT)
    src, tgt = ident_mask(t, 0.3, 9)
    assert [ID_SYMBOLS[i] for i in src] == ["<s>", "Ġfoo", "_", "bar", "Ġ=", "<mask>", "Ġ(", "foo",
                                            "_", "bar", ")", "Ġif", "<mask>", ".", "<mask>", "</s>"]
    assert [ID_SYMBOLS[i] if i != PAD else "" for i in tgt] == [
        "", "", "", "", "", "Ġx", "", "", "", "", "", "", "Ġx", "", "foo", ""]


def test_same_identifier_after_a_space_or_not():
    """Ġfoo and foo (with or without a space before) are one identifier: both occurrences masked."""
    t = ids_of("<s> Ġfoo Ġ= Ġ( foo ) Ġ= Ġx Ġ= Ġx Ġ= Ġx </s>")
    picks = {tuple(np.flatnonzero(ident_mask(t, 0.2, s)[1] != PAD)) for s in range(40)}
    assert (1, 4) in picks  # foo twice (or x three times, or both, or neither: never part of either)
    assert picks <= {(), (1, 4), (7, 9, 11), (1, 4, 7, 9, 11)}


def test_a_sample_without_any_identifier_masks_nothing():
    """Blocks of punctuation only happen in packed code (found at 128-token blocks of the stdlib)."""
    from fairseq_ext.data.masking import identifier_runs

    t = ids_of("<s> Ġ= Ġ( ) . : ( </s>")
    runs, rows = identifier_runs(t, ident_vocab())
    assert (runs == -1).all() and rows.shape[0] == 0
    src, tgt = ident_mask(t, 0.3, 1)
    assert np.array_equal(src, t) and (tgt == PAD).all()


def random_code(rng, n=150):
    body = rng.integers(5, len(ID_SYMBOLS), size=n)
    where = rng.random(n) < 0.05
    body[where] = rng.choice([BOS, PAD, EOS, UNK, MASK], size=int(where.sum()))
    return np.concatenate([[BOS], body, [EOS]])


def test_every_occurrence_of_a_chosen_identifier_and_nothing_else():
    rng = np.random.default_rng(7)
    chosen_total = ordinary_total = 0
    for i in range(300):
        t = random_code(rng)
        _src, tgt = ident_mask(t, 0.15, [i])
        pick = tgt != PAD
        covered = np.zeros(t.size, dtype=bool)
        for name, places in occurrences(t).items():
            states = [pick[p].all() for p in places]
            assert all(pick[p].any() == s for p, s in zip(places, states)), name  # whole occurrences only
            assert len(set(states)) == 1, (name, states)  # every occurrence, or none
            assert not (name in KEYWORDS and states[0]), name
            for p in places:
                covered[p] = True
        assert not pick[~covered].any()  # punctuation, digits-first runs, specials: never
        chosen_total += int(pick.sum())
        ordinary_total += int((~ID_SPECIAL[t]).sum())
    assert chosen_total / ordinary_total == pytest.approx(0.15, abs=0.01)


def test_identifier_unit_reproducible_and_seed_dependent():
    t = random_code(np.random.default_rng(8))
    a, b, c = ident_mask(t, 0.15, [1, 2]), ident_mask(t, 0.15, [1, 2]), ident_mask(t, 0.15, [1, 3])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


def test_identifiers_in_real_code_with_a_real_tokenizer(bpe_dir):
    """stdlib code, the tiny byte-level BPE (which splits most keywords into several pieces): what is
    chosen decodes to identifiers, never to a keyword, and covers about mask_prob of the tokens."""
    import keyword
    import sysconfig
    from pathlib import Path

    from fairseq_ext.data.masking import choose_identifiers, identifier_vocab

    tok = load_tokenizer(bpe_dir)
    d = TokenizerDictionary.from_tokenizer(tok)
    special = np.zeros(len(d), dtype=bool)
    special[d.special_ids] = True
    excluded = [s for w in keyword.kwlist for s in d.word_spellings(w)]
    assert any(len(s) > 1 for s in excluded)  # multi-piece keywords are recognised too
    vocab = identifier_vocab(d.word_surfaces(), d.word_starts(), special, excluded)
    code = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text(encoding="utf-8")
    ids = np.array(tok(code, add_special_tokens=False)["input_ids"])
    chosen = total = 0
    for i, start in enumerate(range(0, ids.size - 256, 256)):
        t = ids[start: start + 256]
        pick = choose_identifiers(t, 0.15, vocab, special, np.random.default_rng(i))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], pick.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            for word in tok.decode(t[a:b].tolist()).split():
                assert word.isidentifier() and not keyword.iskeyword(word), word
        chosen, total = chosen + int(pick.sum()), total + t.size
    assert chosen / total == pytest.approx(0.15, abs=0.02)
