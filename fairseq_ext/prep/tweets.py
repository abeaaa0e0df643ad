"""Social-media text normalization, as COVID-Twitter-BERT prepared its tweets.

User mentions and URLs become the filler words ``twitteruser`` / ``twitterurl``
(runs of them collapse into one), emoji become their names as words (the
maintained ``emoji`` library, no hand-written tables), HTML entities are
unescaped; removing symbol characters and lower-casing are optional.
"""

from __future__ import annotations

import html
import re
import unicodedata

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_USER = re.compile(r"(?<!\w)@\w+")
_RUNS = re.compile(r"\b(twitteruser|twitterurl)(?:\s+\1\b)+")
_EMOJI_NAME = re.compile(r":([a-z0-9_&.'-]+):")
_SPACE = re.compile(r"\s+")


def normalize_tweet(text: str, remove_symbols: bool = False, lowercase: bool = False) -> str:
    """
    >>> normalize_tweet("@bob @amy see https://t.co/x &amp; www.a.org I \\u2764\\ufe0f it")
    'twitteruser see twitterurl & twitterurl I red heart it'
    >>> normalize_tweet("Stay SAFE \\u2728 #covid", remove_symbols=True, lowercase=True)
    'stay safe sparkles #covid'
    """
    import emoji

    text = html.unescape(text)
    text = _URL.sub(" twitterurl ", text)
    text = _USER.sub(" twitteruser ", text)
    text = emoji.demojize(text, delimiters=(" :", ": "))
    text = _EMOJI_NAME.sub(lambda m: " " + m.group(1).replace("_", " ") + " ", text)
    if remove_symbols:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("S"))
    text = _SPACE.sub(" ", text).strip()
    text = _RUNS.sub(r"\1", text)
    return text.lower() if lowercase else text


def tokenizer_is_uncased(tok) -> bool:
    """Does the tokenizer lower-case its input (an uncased model)?"""
    normalizer = tok.backend_tokenizer.normalizer
    return normalizer is not None and normalizer.normalize_str("AbC") == "abc"
