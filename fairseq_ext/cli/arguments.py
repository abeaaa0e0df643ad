"""What every verb's parser shares: one-line usage errors and ``type=`` helpers that refuse
a bad number while parsing, so the message names the option (``argument --vocab-size: ...``).

>>> positive_int("8"), ratio("0.05"), int_at_least(2)("510")
(8, 0.05, 510)
>>> positive_int("0")
Traceback (most recent call last):
argparse.ArgumentTypeError: must be a positive integer, got '0'
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fairseq_ext.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``PROG: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(minimum: int, what: str | None = None) -> Callable[[str], int]:
    """A ``type=`` for integers >= ``minimum``; ``what`` names the bound in the message."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what or f'at least {minimum}'}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def ratio(text: str) -> float:
    """A share in [0, 1): of documents, of tokens."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1] (both ends allowed)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def refuse_output_over_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                              option: str = "-o") -> None:
    """Writing DIR replaces it whole (``--overwrite``): refuse a DIR that is or holds an input."""
    out = Path(output).resolve()
    for raw in inputs:
        if raw is None:
            continue
        path = Path(raw).resolve()
        if path == out or out in path.parents:
            raise UserError(f"{option} {output}: the output directory would replace the input {raw}; "
                            "choose another output directory")


def set_thread_count(workers: int) -> None:
    """Rayon (the tokenizer's thread pool) reads these once, at first use."""
    if workers < 1:
        from fairseq_ext.errors import UserError

        raise UserError(f"--workers must be at least 1, got {workers}")
    os.environ["RAYON_NUM_THREADS"] = str(workers)
    os.environ["RAYON_RS_NUM_CPUS"] = str(workers)
    if workers == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
