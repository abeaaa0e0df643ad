"""What the demo shows at the end: how well the exported model fills a gap, and its learning curves.

Not a verb of its own: ``fairseq-ext demo`` calls these after training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_LOG_LINE = re.compile(r"\| (train_inner|valid) \| (.*)$")


@dataclass
class Curves:
    """Loss (bits) and token accuracy by update, as fairseq-train logged them."""

    train: list[tuple[int, float, float]] = field(default_factory=list)  # (update, loss, accuracy)
    valid: list[tuple[int, float, float]] = field(default_factory=list)


def parse_train_log(text: str) -> Curves:
    """Read ``train_inner`` and ``valid`` records from a ``--log-format simple`` log.

    >>> log = ("2026 | INFO | train_inner | epoch 001:  25 / 9 loss=12.1, accuracy=0.02, num_updates=25\\n"
    ...        "2026 | INFO | valid | epoch 001 | loss 9.5 | accuracy 0.2 | num_updates 100\\n")
    >>> c = parse_train_log(log)
    >>> c.train, c.valid
    ([(25, 12.1, 0.02)], [(100, 9.5, 0.2)])
    """
    curves = Curves()
    for line in text.splitlines():
        m = _LOG_LINE.search(line)
        if not m:
            continue
        fields = dict(re.findall(r"\b(loss|accuracy|num_updates)[= ]([-\d.e+]+)", m.group(2)))
        if {"loss", "num_updates"} <= fields.keys():
            point = (int(float(fields["num_updates"])), float(fields["loss"]), float(fields.get("accuracy", "nan")))
            (curves.train if m.group(1) == "train_inner" else curves.valid).append(point)
    return curves


def plot_curves(curves: Curves, png: Path, title: str) -> None:
    """Loss and accuracy, train and valid, side by side, as a PNG (written to a temporary name, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, points, style in [("train", curves.train, "-"), ("valid", curves.valid, "o-")]:
        if points:
            steps, loss, acc = zip(*points)
            ax_loss.plot(steps, loss, style, label=name)
            ax_acc.plot(steps, acc, style, label=name)
    ax_loss.set(xlabel="update", ylabel="loss (bits per token)", title="loss")
    ax_acc.set(xlabel="update", ylabel="token accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = png.with_name(png.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(png)


def kept_in_order(kept: list[str], output: list[str]) -> int:
    """How many of ``kept`` reappear in ``output`` in the same order (longest common subsequence).

    >>> kept_in_order("the objects used by the module".split(), "the objects used by the builtins module".split())
    6
    >>> kept_in_order(["a", "b", "c"], ["c", "b", "a"])
    1
    """
    prev = [0] * (len(output) + 1)
    for word in kept:
        row = [0]
        for j, out_word in enumerate(output):
            row.append(prev[j] + 1 if word == out_word else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


@dataclass
class InfillResult:
    sentences: int
    context_kept: float  # share of the unmasked words the infills reproduce in order
    word_restored: float  # share of infills that contain the masked word
    examples: list[tuple[str, str, str]]  # (masked input, infill, original)


def infill_eval(model_dir: Path, sentences: list[str], examples: int = 3, beams: int = 1) -> InfillResult:
    """Mask the middle word of each sentence and let the exported model write the sentence back
    (greedy decoding by default: on the demo's model it keeps more of the context than beam search)."""
    import torch
    from transformers import AutoTokenizer, BartForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = BartForConditionalGeneration.from_pretrained(str(model_dir), local_files_only=True).eval()
    kept_total = kept_words = restored = 0
    shown = []
    for sentence in sentences:
        words = sentence.split()
        middle = len(words) // 2
        masked = " ".join(words[:middle] + [tok.mask_token] + words[middle + 1:])
        with torch.no_grad():
            out = model.generate(**tok(masked, return_tensors="pt"), num_beams=beams,
                                 max_new_tokens=2 * len(words) + 8)
        infill = tok.decode(out[0], skip_special_tokens=True).strip()
        context = words[:middle] + words[middle + 1:]
        kept_total += len(context)
        kept_words += kept_in_order(context, infill.split())
        restored += words[middle] in infill.split()
        if len(shown) < examples:
            shown.append((masked, infill, sentence))
    return InfillResult(len(sentences), kept_words / max(kept_total, 1), restored / max(len(sentences), 1), shown)


def held_out_sentences(valid_text: Path, count: int, min_words: int = 6, max_words: int = 20) -> list[str]:
    """The first ``count`` validation sentences of ``min_words``..``max_words`` words (never seen in training)."""
    chosen = []
    with open(valid_text, encoding="utf-8") as f:
        for line in f:
            if min_words <= len(line.split()) <= max_words:
                chosen.append(line.strip())
                if len(chosen) == count:
                    break
    return chosen
