"""The command line: every verb has --help; the package registers itself explicitly."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from fairseq_ext.cli.main import VERBS, build_parser
from support.docs import PAGES, page_text


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_explains_itself(verb):
    proc = run_cli(verb, "--help")
    assert "example" in proc.stdout.lower() or verb == "user-dir"
    assert "TODO" not in proc.stdout


def test_top_level_help_lists_verbs():
    out = run_cli("--help").stdout
    for verb in VERBS:
        assert verb in out


def test_user_dir_points_at_the_package():
    path = Path(run_cli("user-dir").stdout.strip().splitlines()[-1])
    assert (path / "__init__.py").exists() and path.name == "fairseq_ext"


def test_documented_commands_parse():
    """Every `fairseq-ext ...` line in the README and in docs/ uses verbs and flags that exist."""
    parser = build_parser()
    text = "\n".join(page_text(page) for page in PAGES)
    commands = [m.group(1) for m in re.finditer(r"^\s*fairseq-ext (.+?)\s*(?:\\)?$", text, re.M)]
    assert len(commands) >= 5
    for cmd in commands:
        argv = shlex.split(cmd.split(" #")[0])  # as the shell splits it: a quoted --query "..." is one word
        parser.parse_args(argv)  # SystemExit on unknown verb or flag


def test_building_the_parsers_imports_neither_torch_nor_fairseq():
    """Every verb's parser is built at start-up: it must not pay for torch/fairseq (seconds, 300 MB),
    which only training and conversion need (a regression made code-dataset 3x slower to start)."""
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['fairseq-ext']; from fairseq_ext.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'fairseq', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
