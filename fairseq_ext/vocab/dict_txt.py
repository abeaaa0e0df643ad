"""``dict.txt``: the vocabulary file fairseq's tools read, written in tokenizer-id order.

fairseq's plain ``Dictionary.load`` always puts ``<s> <pad> </s> <unk>`` at 0-3 before the
file's lines; when the tokenizer has exactly those at 0-3 (RoBERTa/BART layout) the file leaves
them out, so even the plain loader gets the same order. Other layouts (BERT, T5) list every token
from id 0 after a header line that the plain loader refuses (it would shift every id by 4).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from fairseq_ext.vocab.tokenizer import TokenizerError

FAIRSEQ_DEFAULT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def dict_txt_start(symbols: list[str]) -> int:
    """First id written to dict.txt: 4 for the RoBERTa/BART layout (fairseq adds those), else 0."""
    return 4 if tuple(symbols[:4]) == FAIRSEQ_DEFAULT_SPECIALS else 0


# First line of a dict.txt that lists ids from 0 (BERT, T5 and every other layout
# without fairseq's <s> <pad> </s> <unk> at 0-3). fairseq's plain Dictionary.load
# would put its own four specials first and shift every id by 4; this line is not
# "<token> <count>" (its last field is not a number), so plain fairseq refuses the
# file and its error quotes the line up to that last field. TokenizerDictionary
# skips it; dict.txt files written before it existed load as before.
DICT_TXT_HEADER = (
    "#fairseq_ext: token ids start at 0 in this dict.txt (BERT/T5 layout) and plain fairseq would "
    "shift every id by its own <s> <pad> </s> <unk>; read it with --user-dir fairseq_ext and a "
    "fairseq_ext task (hf_masked_lm, hf_denoising) or fairseq_ext.vocab.TokenizerDictionary.load #"
)


def is_dict_txt_header(line: str) -> bool:
    return line.startswith("#fairseq_ext:") and not line.rstrip().rpartition(" ")[2].lstrip("-").isdigit()


def write_dict_txt(symbols: list[str], f) -> None:
    """dict.txt for fairseq's tools: tokens in id order, one ``token 1`` line each (path or open file).

    The RoBERTa/BART layout leaves out the four specials, which plain fairseq
    adds itself; every other layout starts with :data:`DICT_TXT_HEADER`.
    """
    start = dict_txt_start(symbols)
    lines = itertools.chain([DICT_TXT_HEADER + "\n"] if start == 0 else [], (f"{sym} 1\n" for sym in symbols[start:]))
    if isinstance(f, (str, os.PathLike)):
        with open(f, "w", encoding="utf-8") as fd:
            fd.writelines(lines)
    else:
        f.writelines(lines)


def read_dict_txt_symbols(path: Path) -> list[str]:
    symbols = []
    with open(path, encoding="utf-8") as fd:
        for lineno, line in enumerate(fd, 1):
            line = line.rstrip("\n")
            if not line or (lineno == 1 and is_dict_txt_header(line)):
                continue
            word, sep, count = line.rpartition(" ")
            if not sep or not count.lstrip("-").isdigit():
                raise TokenizerError(f"{path}:{lineno}: expected '<token> <count>', got {line!r}")
            if word.endswith(" #fairseq:overwrite"):
                word = word[: -len(" #fairseq:overwrite")]
            symbols.append(word)
    return symbols


def tokenizer_path_for(data_dir: str | os.PathLike) -> Path:
    """The tokenizer stored in a data directory made by ``fairseq-ext binarize``."""
    data_dir = Path(data_dir)
    path = data_dir / "tokenizer.json"
    if not path.exists():
        raise TokenizerError(
            f"{data_dir}: no tokenizer.json in the data directory "
            "(make it with `fairseq-ext binarize`, which stores the tokenizer it used)"
        )
    return path
