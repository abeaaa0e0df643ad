"""The helpers fairseq's own tests import as ``tests.utils``, which the fairseq-fixed sdist does not ship.

:mod:`support.fairseq_tests` copies this file into the fetched test suite as ``tests/utils.py``. Only
what the selected test modules call is here, written for this project from what those tests expect
of it: tiny translation and language-model corpora (letters as tokens), binarized by
``fairseq-preprocess`` and trained by ``fairseq-train``'s ``main`` in this process, into the data
directory. The data is seeded, so a run with fairseq_ext and one without train on the same text.
fairseq's programs are imported where they are called: this project's own test session imports this
module too (doctests) and must not load fairseq's training loop (its logging set-up, the plugin's patches).
"""

from __future__ import annotations

import os
import random

SPLITS = ("train", "valid", "test")


def create_dummy_data(data_dir, num_examples: int = 100, maxlen: int = 20, alignment: bool = False) -> None:
    """``{train,valid,test}.{in,out}`` in ``data_dir``: lines of 1 to ``maxlen`` random letters
    (``.align`` files of random ``src-tgt`` pairs too with ``alignment``)."""
    rng = random.Random(f"{num_examples}/{maxlen}")
    for split in SPLITS:
        for side in ("in", "out"):
            lines = [" ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, maxlen)))
                     for _ in range(num_examples)]
            with open(os.path.join(data_dir, f"{split}.{side}"), "w") as f:
                f.write("\n".join(lines) + "\n")
        if alignment:
            _write_alignment(data_dir, split, rng)


def _write_alignment(data_dir, split: str, rng: random.Random) -> None:
    with open(os.path.join(data_dir, f"{split}.in")) as src, open(os.path.join(data_dir, f"{split}.out")) as tgt:
        pairs = [(len(s.split()), len(t.split())) for s, t in zip(src, tgt)]
    with open(os.path.join(data_dir, f"{split}.align"), "w") as f:
        for n_src, n_tgt in pairs:
            links = rng.randint(max(1, (n_src + n_tgt) // 4), n_src + n_tgt)
            f.write(" ".join(f"{rng.randrange(n_src)}-{rng.randrange(n_tgt)}" for _ in range(links)) + "\n")


def _preprocess(flags: list[str]) -> None:
    from fairseq import options
    from fairseq_cli import preprocess

    preprocess.main(options.get_preprocessing_parser().parse_args(flags))


def preprocess_translation_data(data_dir, extra_flags=None) -> None:
    """Binarize the ``in`` -> ``out`` corpus into ``data_dir`` (every token kept)."""
    _preprocess(["--source-lang", "in", "--target-lang", "out", "--thresholdtgt", "0", "--thresholdsrc", "0",
                 *(f"--{split}pref={os.path.join(data_dir, split)}" for split in SPLITS),
                 "--destdir", str(data_dir), *(extra_flags or [])])


def preprocess_lm_data(data_dir, languages=None) -> None:
    """Binarize the ``out`` side as a monolingual corpus into ``data_dir`` (or one per language)."""
    for lang in languages or [None]:
        prefix, dest = ("out", data_dir) if lang is None else (lang, os.path.join(data_dir, lang))
        _preprocess(["--only-source", *(f"--{split}pref={os.path.join(data_dir, f'{split}.{prefix}')}"
                                        for split in SPLITS), "--destdir", str(dest)])


def _train(flags: list[str]) -> None:
    from fairseq import options
    from fairseq_cli import train

    train.main(options.parse_args_and_arch(options.get_training_parser(), flags))


def _validate(flags: list[str]) -> None:
    from fairseq import options
    from fairseq_cli import validate

    validate.main(options.parse_args_and_arch(options.get_validation_parser(), flags))


def train_translation_model(data_dir, arch, extra_flags=None, task="translation", run_validation=False,
                            lang_flags=None, extra_valid_flags=None, world_size=1) -> None:
    """One epoch of ``arch`` on the binarized corpus, saved into ``data_dir`` (then validated if asked)."""
    lang_flags = ["--source-lang", "in", "--target-lang", "out"] if lang_flags is None else lang_flags
    _train(["--task", task, str(data_dir), "--save-dir", str(data_dir), "--arch", arch, "--optimizer", "nag",
            "--lr", "0.05", "--max-tokens", "500", "--max-epoch", "1", "--no-progress-bar",
            "--distributed-world-size", str(world_size), "--num-workers", "0", *lang_flags, *(extra_flags or [])])
    if run_validation:
        _validate(["--task", task, str(data_dir), "--path", os.path.join(data_dir, "checkpoint_last.pt"),
                   "--valid-subset", "valid", "--max-tokens", "500", "--no-progress-bar", "--num-workers", "0",
                   *lang_flags, *(extra_valid_flags or [])])


def train_language_model(data_dir, arch, extra_flags=None, run_validation=False, extra_valid_flags=None,
                         task="language_modeling", world_size=1) -> None:
    """One epoch of a small ``arch`` language model, saved into ``data_dir`` (then validated if asked)."""
    _train(["--task", task, str(data_dir), "--arch", arch, "--optimizer", "adam", "--lr", "0.0001",
            "--max-tokens", "500", "--tokens-per-sample", "500", "--save-dir", str(data_dir), "--max-epoch", "1",
            "--no-progress-bar", "--distributed-world-size", str(world_size), "--ddp-backend", "no_c10d",
            "--num-workers", "0", *(extra_flags or [])])
    if run_validation:
        _validate(["--task", task, str(data_dir), "--path", os.path.join(data_dir, "checkpoint_last.pt"),
                   "--valid-subset", "valid", "--max-tokens", "500", "--no-progress-bar", "--num-workers", "0",
                   *(extra_valid_flags or [])])
