"""Print the directory to pass as `fairseq-train --user-dir` for the installed package.

From a checkout, `--user-dir fairseq_ext` (relative to the repository root) works
too; with an installed package use:

  fairseq-train DATA --user-dir "$(fairseq-ext user-dir)" --task ...
"""

from __future__ import annotations

import argparse
import os

HELP = "print the path to give fairseq-train --user-dir"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import fairseq_ext

    print(os.path.dirname(os.path.abspath(fairseq_ext.__file__)))
    return 0
