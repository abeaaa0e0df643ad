"""prepare --normalize tweets: fillers for users and URLs, emoji as words, HTML unescaped, casing by tokenizer."""

from __future__ import annotations

import pytest

from conftest import run_cli
from fairseq_ext.prep.tweets import normalize_tweet, tokenizer_is_uncased
from fairseq_ext.vocab.tokenizer import load_tokenizer


@pytest.mark.parametrize("raw,expected", [
    ("@who thanks!", "twitteruser thanks!"),
    ("@a @b @c read this http://x.co/1 https://y.org/a?b=c", "twitteruser read this twitterurl"),
    ("email me at me@example.com", "email me at me@example.com"),
    ("Fish &amp; chips &lt;3", "Fish & chips <3"),
    ("so happy \U0001F602\U0001F602", "so happy face with tears of joy face with tears of joy"),
    ("  lots   of\tspace ", "lots of space"),
])
def test_normalize_tweet(raw, expected):
    assert normalize_tweet(raw) == expected


def test_symbols_and_lowercase_are_optional():
    raw = "Price \u20ac5 \u2192 GREAT \u00b1"
    assert normalize_tweet(raw) == raw
    assert normalize_tweet(raw, remove_symbols=True) == "Price 5 GREAT"
    assert normalize_tweet(raw, remove_symbols=True, lowercase=True) == "price 5 great"


def test_uncased_detection(bpe_dir, bert_dir):
    assert tokenizer_is_uncased(load_tokenizer(bert_dir))
    assert not tokenizer_is_uncased(load_tokenizer(bpe_dir))


def test_prepare_tweets_lowercases_only_for_uncased_tokenizers(tmp_path, bpe_dir, bert_dir):
    tweets = ["@NHS Stay HOME and stay safe everyone \U0001F637 https://t.co/abc",
              "Wash your HANDS often &amp; keep distance @WHO @CDC",
              "New CASES reported today in the city center www.news.org"]
    (tmp_path / "tweets.txt").write_text("\n".join(tweets) + "\n", encoding="utf-8")
    for name, tok, lower in (("bert", bert_dir, True), ("bpe", bpe_dir, False)):
        out = tmp_path / name
        proc = run_cli("prepare", str(tmp_path / "tweets.txt"), "-o", str(out), "--doc-sep", "line",
                       "--valid-ratio", "0", "--normalize", "tweets", "--tokenizer", str(tok), "--quiet")
        assert f"lowercase {'yes' if lower else 'no'}" in proc.stdout
        text = (out / "train.txt").read_text(encoding="utf-8")
        assert "twitteruser" in text and "twitterurl" in text and "face with medical mask" in text
        assert "&amp;" not in text and "@" not in text and "https" not in text
        assert ("HOME" in text) is (not lower)
