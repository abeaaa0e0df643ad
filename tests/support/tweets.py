"""Tweet-like text and a BERT-layout vocabulary for continued pretraining."""

from __future__ import annotations

import random


def make_tweets(n: int, seed: int) -> list[str]:
    """Tweet-like lines: mentions, URLs, emoji, HTML entities, hashtags, mixed case, some repeats."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(FILLERS), rng.choice(VERBS), rng.choice(FILLERS), rng.choice(TOPICS)]
        words += rng.sample(TOPICS, 2) + [rng.choice(VERBS), rng.choice(TOPICS)]
        if rng.random() < 0.5:
            words[0] = words[0].upper() if rng.random() < 0.3 else words[0].capitalize()
        text = " ".join(words)
        if rng.random() < 0.6:
            text = f"@user{rng.randint(1, 99)} " + ("@friend " if rng.random() < 0.3 else "") + text
        if rng.random() < 0.4:
            text += f" &amp; #{rng.choice(TOPICS)}"
        if rng.random() < 0.5:
            text += " " + rng.choice(EMOJI)
        if rng.random() < 0.4:
            text += f" https://t.co/{rng.randint(10000, 99999)}"
        lines.append(text + rng.choice(["", "!", "!!", "."]))
    return lines


def bert_vocab() -> list[str]:
    """BERT's layout ([PAD]=0, [UNK]=100 ... [MASK]=103), whole words of the tweets, letters as fallback."""
    emoji_words = "face with tears of joy medical red heart folded hands party popper".split()
    words = sorted(set(TOPICS + VERBS + FILLERS + emoji_words + ["twitteruser", "twitterurl"]))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("!#&.,:?") + letters + [f"##{c}" for c in letters] + words
    return list(dict.fromkeys(vocab))  # "a" is a letter and a word


TOPICS = ("vaccine mask lockdown hospital nurses doctors cases news school home work friends family weekend "
          "coffee rain sun game team music").split()


VERBS = "love hate need miss watch read share wear stay thank follow".split()


FILLERS = "the a my our your this that today tonight again so very really please just".split()


EMOJI = ["\U0001F602", "\U0001F637", "\u2764\ufe0f", "\U0001F64F", "\U0001F389"]
