"""``fairseq-ext``: one sub-command per verb; each verb lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Optional

# verb -> module; modules are imported only when their verb runs (fast --help).
VERBS = {
    "prepare": "fairseq_ext.cli.prepare",
    "train-tokenizer": "fairseq_ext.cli.train_tokenizer",
    "binarize": "fairseq_ext.cli.binarize",
    "code-dataset": "fairseq_ext.cli.code_dataset",
    "code-pairs": "fairseq_ext.cli.code_pairs",
    "encode": "fairseq_ext.cli.encode",
    "eval-retrieval": "fairseq_ext.cli.eval_retrieval",
    "export-hf": "fairseq_ext.cli.export_hf",
    "import-hf": "fairseq_ext.cli.import_hf",
    "user-dir": "fairseq_ext.cli.user_dir",
    "demo": "fairseq_ext.cli.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from fairseq_ext.cli.arguments import OneLineParser

    parser = OneLineParser(
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
        p.set_defaults(_run=module.run, _verb=verb, _parser=p)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run one verb; the exit status: 0 done, 1 bad input (one line on stderr), 2 bad usage, 130 Ctrl-C."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:  # reported by the verb's parser, so the line names the verb
            args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed as one line
        return exc.code if isinstance(exc.code, int) else 1
    return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    """Run ``args._run``; a user mistake becomes one line and exit status 1, a bug keeps its traceback."""
    from fairseq_ext.errors import USER_ERRORS, user_message

    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # stdout went to `| head`, which has exited: stop quietly, as `cat | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 128 + signal.SIGPIPE
    except USER_ERRORS as exc:
        message = user_message(exc)
        if message is None:  # an OSError that is not about the user's paths or machine
            raise
        print(f"fairseq-ext {args._verb}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fairseq-ext {args._verb}: interrupted; no output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
