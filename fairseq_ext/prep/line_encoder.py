"""Lines of text -> tokenizer ids, a batch at a time, as ``binarize`` and ``encode`` store them.

Each line becomes its ids then eos; a line longer than ``max_line_tokens`` (eos included) is cut into
several items, never dropped; text that merely spells a special token (``<s>``, ``[CLS]``) is encoded as
ordinary text, never as the special id. The fast tokenizer's ``encode_batch`` spreads a batch over every
core, and its output does not depend on the number of threads.
"""

from __future__ import annotations

import itertools
from typing import Optional

import numpy as np

from fairseq_ext.errors import UserError


class BinarizeError(UserError):
    """Bad input to the binarizer: the message names the file and line."""


class LineEncoder:
    """Encodes batches of text lines to flat id arrays with a fast tokenizer."""

    def __init__(self, tok, eos: int, unk: Optional[int], special_ids, max_line_tokens: int):
        from tokenizers import Tokenizer

        if max_line_tokens < 2:
            raise BinarizeError(f"--max-line-tokens must be at least 2 (one token and eos), got {max_line_tokens}")
        backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        # Special-token text ("<s>", "[CLS]") is split like any other text.
        backend.encode_special_tokens = True
        self.backend = backend
        self._encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        self.eos, self.unk = eos, unk
        # unk is what the model emits for unknown text: legitimate, not special-token text.
        self.special_ids = np.asarray(sorted(set(special_ids) - {unk}), dtype=np.int64)
        self.chunk = max_line_tokens - 1  # room for eos

    def encode(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """ids (flat), per-line lengths, and how many lines needed special-text repair."""
        encs = self._encode(lines, add_special_tokens=False)
        id_lists = [e.ids for e in encs]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        hits = np.isin(flat, self.special_ids)
        if not hits.any():
            return flat, lengths, 0
        # A vocabulary can hold a special token's string as a learned merge;
        # re-encode those lines character by character around the hit.
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        bad_lines = np.unique(np.searchsorted(offsets, np.flatnonzero(hits), side="right") - 1)
        for i in bad_lines:
            id_lists[i] = self._spell_out(id_lists[i])
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        flat = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        return flat, lengths, len(bad_lines)

    def _spell_out(self, ids: list[int]) -> list[int]:
        out: list[int] = []
        specials = set(self.special_ids.tolist())
        for i in ids:
            if i not in specials:
                out.append(i)
                continue
            for ch in self.backend.id_to_token(i):
                piece = [p for p in self.backend.encode(ch, add_special_tokens=False).ids if p not in specials]
                out.extend(piece if piece else ([self.unk] if self.unk is not None else []))
        return out

    def items(self, flat: np.ndarray, lengths: np.ndarray, is_sep: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Lay out one batch as items: sentences cut to ``chunk`` tokens + eos, separators empty.

        Returns (tokens with eos inserted, item sizes, number of lines cut).
        Lines with no token and no separator flag produce no item.
        """
        n_chunks = np.where(is_sep, 1, -(-lengths // self.chunk))  # ceil; 0 for empty lines
        item_line = np.repeat(np.arange(len(lengths)), n_chunks)
        first_item = np.cumsum(n_chunks) - n_chunks
        k = np.arange(len(item_line)) - first_item[item_line]  # chunk number within its line
        item_tokens = np.minimum(lengths[item_line] - k * self.chunk, self.chunk)
        text_item = ~is_sep[item_line]
        sizes = np.where(text_item, item_tokens + 1, 0)
        out = np.full(int(sizes.sum()), self.eos, dtype=np.int64)
        if flat.size:
            # token t of line i sits at t + (number of eos written before it)
            tok_line = np.repeat(np.arange(len(lengths)), lengths)
            pos_in_line = np.arange(flat.size) - (np.cumsum(lengths) - lengths)[tok_line]
            tok_item = first_item[tok_line] + pos_in_line // self.chunk
            eos_before = np.cumsum(text_item) - text_item
            out[np.arange(flat.size) + eos_before[tok_item]] = flat
        return out, sizes, int((n_chunks > 1).sum())
