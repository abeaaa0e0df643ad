"""Masked-LM samples from token blocks, with masking from :mod:`fairseq_ext.data.masking`."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from fairseq.data import data_utils

from fairseq_ext.data.block_dataset import SeededBlockDataset
from fairseq_ext.data.masking import IdentifierVocab, MaskConfig, mlm_mask, shorten


class HFMaskedLMDataset(SeededBlockDataset):
    """Wraps blocks shaped ``[bos] tokens ...``; masks them dynamically (new masks every epoch)."""

    def __init__(self, blocks, sizes, dictionary, mask: MaskConfig, seed: int, short_seq_prob: float = 0.0,
                 shuffle: bool = True, identifiers: Optional[IdentifierVocab] = None, pad_to_multiple: int = 1):
        super().__init__(blocks, sizes, dictionary, seed, shuffle, pad_to_multiple)
        self.mask = mask
        self.short_seq_prob = short_seq_prob
        self.is_word_start = (dictionary.word_starts() if mask.unit in ("word", "span")
                              else np.ones(len(dictionary), dtype=bool))
        if mask.unit == "identifier" and identifiers is None:
            raise ValueError("mask unit 'identifier' needs the vocabulary's IdentifierVocab")
        self.identifiers = identifiers  # for mask unit 'identifier'

    def __getitem__(self, index):
        rng = self.rng(index)
        tokens = shorten(self.blocks[index].numpy().astype(np.int64), self.short_seq_prob, rng)
        source, target = mlm_mask(tokens, self.mask, mask_idx=self.dictionary.mask_index, pad=self.dictionary.pad(),
                                  is_word_start=self.is_word_start, special=self.special,
                                  random_tokens=self.random_tokens, rng=rng, identifiers=self.identifiers)
        return {"id": index, "source": torch.from_numpy(source), "target": torch.from_numpy(target)}

    def collater(self, samples, pad_to_length=None):
        """The batch, plus ``masked_positions``: where the targets are (flat indices into B*T, made here on
        the host so that the LM head gathers them without the device telling how many), and their count."""
        if not samples:
            return {}
        pad = self.dictionary.pad()
        src, tgt = (data_utils.collate_tokens([s[key] for s in samples], pad, pad_to_length=pad_to_length,
                                              pad_to_multiple=self.pad_to_multiple) for key in ("source", "target"))
        lengths = torch.tensor([len(s["source"]) for s in samples])
        positions = tgt.view(-1).ne(pad).nonzero().squeeze(1)
        return {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": int(lengths.sum()),
            "net_input": {"src_tokens": src, "src_lengths": lengths},
            "target": tgt,
            "masked_positions": positions,
            "nmasked": int(positions.numel()),
        }
