"""``fairseq-ext``: one sub-command per verb; each verb lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional

# verb -> module; modules are imported only when their verb runs (fast --help).
VERBS = {
    "prepare": "fairseq_ext.cli.prepare",
    "train-tokenizer": "fairseq_ext.cli.train_tokenizer",
    "binarize": "fairseq_ext.cli.binarize",
    "encode": "fairseq_ext.cli.encode",
    "export-hf": "fairseq_ext.cli.export_hf",
    "import-hf": "fairseq_ext.cli.import_hf",
    "user-dir": "fairseq_ext.cli.user_dir",
    "demo": "fairseq_ext.cli.demo",
}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-ext",
        description="Prepare text, train tokenizers and binarize data for fairseq with "
        "Hugging Face tokenizers (index == tokenizer id), then train with "
        "`fairseq-train --user-dir fairseq_ext`.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            verb,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _verb=verb)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    from fairseq_ext.errors import USER_ERRORS

    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        print(f"fairseq-ext {args._verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fairseq-ext {args._verb}: interrupted; no output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
