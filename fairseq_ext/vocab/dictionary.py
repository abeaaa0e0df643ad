"""A fairseq ``Dictionary`` whose index equals the Hugging Face tokenizer id.

This is the project's one invariant (see DESIGN.md): the dictionary is derived
from the tokenizer, never from token frequencies, so ``dictionary[i]`` is the
token the tokenizer calls ``i`` for every ``i``, special tokens included.

``dict.txt`` is written for fairseq's own tools. fairseq's plain
``Dictionary.load`` always puts ``<s> <pad> </s> <unk>`` at 0-3 before the
file's lines; when the tokenizer has exactly those at 0-3 (RoBERTa/BART
layout) the file leaves them out, so even the plain loader gets the same
order. Other layouts (BERT, T5) list every token from id 0 after a header
line that the plain loader refuses (it would shift every id by 4), and must
be read with :meth:`TokenizerDictionary.load`, which every fairseq_ext task
uses (``fairseq-preprocess --user-dir fairseq_ext --task hf_masked_lm`` too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from fairseq.data import Dictionary
from fairseq.tokenizer import tokenize_line

from fairseq_ext.vocab.dict_txt import dict_txt_start, read_dict_txt_symbols, tokenizer_path_for, write_dict_txt
from fairseq_ext.vocab.identity import TokenizerIdentity
from fairseq_ext.vocab.tokenizer import (
    SpecialRoles,
    TokenizerError,
    load_tokenizer,
    save_tokenizer,
    special_roles,
    special_token_ids,
    vocab_in_id_order,
)
from fairseq_ext.vocab.word_starts import word_start_rule


class TokenizerDictionary(Dictionary):
    """``Dictionary`` built from a tokenizer's vocabulary, in id order.

    Roles (``bos_index`` ...) come from the tokenizer's own special tokens;
    a role the tokenizer lacks is ``None`` (T5 has no bos). ``mask_index`` is
    the tokenizer's mask token, when it has one.
    """

    def __init__(self, symbols: list[str], roles: SpecialRoles, special_ids: Iterable[int] = ()):
        # Deliberately not calling Dictionary.__init__: it would insert
        # <s> <pad> </s> <unk> at 0-3 whatever the tokenizer says.
        self.symbols = list(symbols)
        self.count = [1] * len(self.symbols)
        self.indices = {}
        for idx, sym in enumerate(self.symbols):
            self.indices.setdefault(sym, idx)
        self.roles = roles
        self.bos_index, self.pad_index = roles.bos, roles.pad
        self.eos_index, self.unk_index = roles.eos, roles.unk
        self.mask_index = roles.mask
        self.bos_word, self.pad_word, self.eos_word, self.unk_word = (
            None if i is None else self.symbols[i]
            for i in (roles.bos, roles.pad, roles.eos, roles.unk)
        )
        self.special_ids = np.array(sorted(set(special_ids)), dtype=np.int64)
        # fairseq treats indices < nspecial as special: the leading run of specials.
        leading = 0
        specials = set(self.special_ids.tolist())
        while leading in specials:
            leading += 1
        self.nspecial = leading
        self.tokenizer_size = len(self.symbols)

    # -- construction -----------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tok, pad_to_multiple: int = 1) -> TokenizerDictionary:
        symbols, _holes = vocab_in_id_order(tok)
        d = cls(symbols, special_roles(tok), special_token_ids(tok))
        d._tokenizer = tok
        try:
            d._word_start = word_start_rule(tok)
        except TokenizerError as exc:  # only whole-word masking needs it; say so when asked
            d._word_start_error = str(exc)
        if pad_to_multiple > 1:
            d.pad_to_multiple_(pad_to_multiple)
        return d

    @classmethod
    def from_path(cls, path: str | os.PathLike, pad_to_multiple: int = 1) -> TokenizerDictionary:
        """From TOK: a tokenizer.json, an HF tokenizer directory or a .model."""
        return cls.from_tokenizer(load_tokenizer(path), pad_to_multiple)

    @classmethod
    def load(cls, f, add_special_symbols: bool = True) -> TokenizerDictionary:
        """Load the dictionary of a data directory from its ``tokenizer.json``.

        ``f`` is the path of a ``dict.txt`` (what fairseq tasks pass). The
        tokenizer next to it is the source of truth; the ``dict.txt`` must
        agree with it, else a ``TokenizerError`` names both files. ``f`` may
        also be TOK itself (a ``tokenizer.json``, a tokenizer directory or a
        ``.model``), as in ``fairseq-preprocess --srcdict TOK``.
        """
        path = Path(f)
        if path.is_dir() or (path.suffix in (".json", ".model") and path.is_file()):
            d = cls.from_path(path)
            if (path / "dict.txt").is_file():
                d.check_dict_txt(path / "dict.txt")
            return d
        d = cls.from_path(tokenizer_path_for(path.parent))
        if path.exists():
            d.check_dict_txt(path)
        return d

    # -- dict.txt ---------------------------------------------------------
    def dict_txt_start(self) -> int:
        """First id written to dict.txt (4 for the RoBERTa/BART layout, else 0)."""
        return dict_txt_start(self.symbols)

    def save(self, f) -> None:
        """Write dict.txt: tokens in id order, one ``token 1`` line each (path or open file).

        Saved to a path in a directory without a tokenizer (as ``fairseq-preprocess``
        saves ``--srcdict`` into ``--destdir``), the tokenizer is saved beside it, so the
        directory carries its vocabulary like one made by ``fairseq-ext binarize``.
        """
        write_dict_txt(self.symbols, f)
        tok = getattr(self, "_tokenizer", None)
        if tok is not None and isinstance(f, (str, os.PathLike)) and not (Path(f).parent / "tokenizer.json").exists():
            save_tokenizer(tok, Path(f).parent)

    def encode_line(self, line, line_tokenizer=tokenize_line, add_if_not_exist=True, consumer=None,
                    append_eos=True, reverse_order=False) -> torch.IntTensor:
        """fairseq's ``encode_line``, except that a blank line is a document separator: an empty item.

        That is what ``fairseq-ext binarize`` writes for a blank line and what the
        tasks' ``complete_doc`` mode (``document_sep_len=0``) looks for; fairseq's
        own would write a lone eos.
        """
        if append_eos and not line_tokenizer(line):
            return torch.IntTensor(0)
        return super().encode_line(line, line_tokenizer, add_if_not_exist, consumer, append_eos, reverse_order)

    def check_dict_txt(self, path: Path) -> None:
        listed = read_dict_txt_symbols(path)
        expected = self.symbols[self.dict_txt_start():]
        # dict.txt may omit fairseq's vocabulary padding (madeupwordNNNN).
        if listed != expected[: len(listed)] or len(listed) < self.tokenizer_size - self.dict_txt_start():
            first = next(
                (i for i, (a, b) in enumerate(zip(listed, expected)) if a != b),
                min(len(listed), len(expected)),
            )
            raise TokenizerError(
                f"{path} disagrees with {tokenizer_path_for(path.parent)}: "
                f"{len(listed)} entries vs {len(expected)} tokenizer tokens, first difference at line {first + 1}"
            )

    # -- helpers ----------------------------------------------------------
    def word_starts(self) -> np.ndarray:
        """Boolean array over the dictionary: does token ``i`` start a word?"""
        rule = getattr(self, "_word_start", None)
        if rule is None:
            raise TokenizerError(getattr(self, "_word_start_error", "dictionary was not built from a tokenizer"))
        mask = np.fromiter((rule(s) for s in self.symbols), dtype=bool, count=len(self.symbols))
        mask[self.special_ids] = True
        return mask

    def word_surfaces(self) -> list[str]:
        """Each token's text without its family's word marker (``Ġ``, ``▁``, ``##``), in id order."""
        rule = self._rule()
        return [rule.surface(s) for s in self.symbols]

    def word_spellings(self, word: str) -> list[list[int]]:
        """The token id sequences ``word`` is encoded as inside a text (after a space, and not)."""
        model = self._tokenizer.backend_tokenizer.model
        return [[t.id for t in model.tokenize(form)] for form in self._rule().spellings(word)]

    def _rule(self):
        rule = getattr(self, "_word_start", None)
        if rule is None:
            raise TokenizerError(getattr(self, "_word_start_error", "dictionary was not built from a tokenizer"))
        return rule

    def require(self, *roles: str, source: str = "tokenizer") -> None:
        self.roles.require(*roles, source=source)

    def identity(self) -> TokenizerIdentity:
        """The tokenizer's identity (size, role ids, vocabulary hash); fairseq's padding rows excluded."""
        return TokenizerIdentity.of(self.symbols[: self.tokenizer_size], self.roles)


