"""BART denoising samples from token blocks, with noise from :mod:`fairseq_ext.data.noising`."""

from __future__ import annotations

import numpy as np
import torch
from fairseq.data.denoising_dataset import collate

from fairseq_ext.data.block_dataset import SeededBlockDataset
from fairseq_ext.data.noising import NoiseConfig, bart_noise


class HFDenoisingDataset(SeededBlockDataset):
    """Wraps blocks shaped ``[bos] sentence eos ... eos`` and noises their source side."""

    def __init__(self, blocks, sizes, dictionary, noise: NoiseConfig, seed: int, shuffle: bool = True,
                 pad_to_multiple: int = 1):
        super().__init__(blocks, sizes, dictionary, seed, shuffle, pad_to_multiple)
        self.noise = noise
        whole_words = noise.mask_length in ("word", "span-poisson")
        self.is_word_start = dictionary.word_starts() if whole_words else np.ones(len(dictionary), dtype=bool)

    def __getitem__(self, index):
        target = self.blocks[index]
        source = bart_noise(
            target.numpy().astype(np.int64), self.noise, eos=self.dictionary.eos(),
            mask_idx=self.dictionary.mask_index, is_word_start=self.is_word_start, special=self.special,
            random_tokens=self.random_tokens, rng=self.rng(index),
        )
        return {"id": index, "source": torch.from_numpy(source), "target": target.long()}

    def collater(self, samples, pad_to_length=None):
        if samples:
            pad_to_length = {key: self.padded_length(samples, key, pad_to_length) for key in ("source", "target")}
        return collate(samples, self.dictionary.pad(), self.dictionary.eos(), self.dictionary,
                       pad_to_length=pad_to_length)
