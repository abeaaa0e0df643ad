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


def add_table_arguments(p: argparse.ArgumentParser, dataset: bool = True, text_key: bool = True,
                        row: str = "document") -> argparse._ArgumentGroup:
    """--text-key, --split, --skip-bad-rows (and --dataset ...): how JSON lines, Parquet, CSV and HF datasets
    are read (:mod:`fairseq_ext.prep.tables`). The code verbs name their own keys (``text_key=False``; a
    ``row`` is a source file there) in the group returned."""
    g = p.add_argument_group(
        "table inputs", "JSON lines (.jsonl/.ndjson/.json, plain or .gz/.zst/.bz2/.xz), Parquet files or directories "
        "of them, CSV/TSV with a header, and directories written by datasets' save_to_disk are recognised from "
        f"their names and contents; each row is one {row}")
    if text_key:
        g.add_argument("--text-key", default="text", metavar="KEY",
                       help="the column or JSON key holding the text; a dotted path for nested keys (meta.text); "
                       "default %(default)s")
    g.add_argument("--split", metavar="NAME",
                   help="the split of a saved DatasetDict (or of --dataset, default train) to read")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="skip rows without the key, with a non-string value or malformed JSON (and the rest of a "
                   "truncated compressed file) and count them, instead of stopping at the first")
    if dataset:
        g.add_argument("--dataset", metavar="NAME",
                       help="also read datasets.load_dataset(NAME) streamed, offline only: a builder such as json, "
                       "parquet, csv, text with --data-files, or a dataset in the local cache")
        g.add_argument("--data-files", nargs="+", metavar="GLOB",
                       help="the files --dataset reads (data_files=): paths or globs (quoted, or expanded by the "
                       "shell); with the json, parquet and csv builders they are read as tables named by file "
                       "and line")
        g.add_argument("--dataset-config", metavar="C", help="the configuration of --dataset (its second argument)")
    return g


def table_key(text: str) -> str:
    """A ``type=`` for a column or JSON key: a name, or names joined by dots (a nested key)."""
    if not text.strip() or any(not part for part in text.split(".")):
        raise argparse.ArgumentTypeError(f"not a key (a name, or names joined by dots), got {text!r}")
    return text


def table_options(args: argparse.Namespace, split_candidates: tuple[str, ...] = ()):
    """The :class:`fairseq_ext.prep.tables.TableOptions` the table arguments give."""
    from fairseq_ext.prep.tables import TableOptions

    if getattr(args, "dataset", None) is None and (getattr(args, "data_files", None)
                                                   or getattr(args, "dataset_config", None)):
        raise UserError("--data-files and --dataset-config need --dataset NAME")
    if not args.text_key.strip() or any(not part for part in args.text_key.split(".")):
        raise UserError(f"--text-key {args.text_key!r}: not a key (a name, or names joined by dots)")
    return TableOptions(text_key=args.text_key, split=args.split, skip_bad_rows=args.skip_bad_rows,
                        split_candidates=split_candidates)


def dataset_tables(args: argparse.Namespace, options) -> list:
    """The ``--dataset`` input as a one-element list of :class:`~fairseq_ext.prep.tables.TableText` (or none)."""
    from fairseq_ext.prep.table_inputs import dataset_input
    from fairseq_ext.prep.tables import TableText

    if getattr(args, "dataset", None) is None:
        return []
    return [TableText(dataset_input(args.dataset, {"text": options.text_key}, options,
                                    data_files=args.data_files, config=args.dataset_config))]
