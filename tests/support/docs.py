"""The documentation's pages and their fenced code blocks, read the way the tests use them.

``tests/docs/test_docs.py`` runs every ``bash``/``python`` block of these pages, in this order;
``tests/cli/test_cli.py`` parses every documented ``fairseq-ext`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conftest import REPO

# The order the pages' blocks run in, in one working directory: a page may use what an earlier one made
# (roberta.md trains on bart.md's data-bin, continued-pretraining.md imports bart.md's my-bart, the
# command reference repeats the recipes' verbs, cluster.md trains on the command reference's shards).
PAGES = (
    "README.md",
    "docs/bart.md",
    "docs/roberta.md",
    "docs/continued-pretraining.md",
    "docs/code.md",
    "docs/commands.md",
    "docs/conversion.md",
    "docs/cluster.md",
    "docs/gpu.md",
    "docs/benchmarks.md",
    "docs/install.md",
    "docs/development.md",
)


@dataclass
class Block:
    page: str  # relative to the repository root
    lang: str
    line: int  # 1-based line of the opening fence
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def page_text(page: str) -> str:
    return (REPO / page).read_text(encoding="utf-8")


def page_blocks(page: str) -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for n, line in enumerate(page_text(page).splitlines(), 1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), n, []
        elif fence:
            blocks.append(Block(page, lang, start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{page}:{start}: unclosed code fence"
    return blocks


def doc_blocks() -> list[Block]:
    """Every block of every page, pages in ``PAGES`` order."""
    return [block for page in PAGES for block in page_blocks(page)]


def block_commands(block: Block) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for line in block.text.splitlines():
        line = re.sub(r"(^|\s)#\s.*$", "", line).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line.strip()).strip()
        pending = ""
        if command:
            commands.append(command)
    return commands
