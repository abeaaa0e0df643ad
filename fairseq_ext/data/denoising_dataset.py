"""BART denoising samples from token blocks, with noise from :mod:`fairseq_ext.data.noising`.

Each sample's noise comes from a generator seeded with ``(seed, epoch, index)``,
so a sample is the same whatever the number of data-loader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.data.denoising_dataset import collate

from fairseq_ext.data.noising import NoiseConfig, bart_noise


class HFDenoisingDataset(FairseqDataset):
    """Wraps blocks shaped ``[bos] sentence eos ... eos`` and noises their source side."""

    def __init__(self, blocks, sizes, dictionary, noise: NoiseConfig, seed: int, shuffle: bool = True):
        self.blocks = blocks
        self.sizes = np.asarray(sizes)
        self.dictionary = dictionary
        self.noise = noise
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 1
        vocab = len(dictionary)
        self.special = np.zeros(vocab, dtype=bool)
        self.special[dictionary.special_ids] = True
        self.special[dictionary.tokenizer_size:] = True  # vocabulary padding is never a real token
        self.is_word_start = dictionary.word_starts() if noise.mask_length == "word" or (
            noise.mask_length == "span-poisson") else np.ones(vocab, dtype=bool)
        self.random_pool = np.flatnonzero(~self.special)  # replacements: any ordinary token

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return True  # only the noise changes with the epoch, not the sizes

    def set_epoch(self, epoch, **unused):
        self.epoch = epoch

    def _random_tokens(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.random_pool[rng.integers(0, self.random_pool.size, size=n)]

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        target = self.blocks[index]
        tokens = target.numpy().astype(np.int64)
        source = bart_noise(
            tokens, self.noise, eos=self.dictionary.eos(), mask_idx=self.dictionary.mask_index,
            is_word_start=self.is_word_start, special=self.special, random_tokens=self._random_tokens, rng=rng,
        )
        return {"id": index, "source": torch.from_numpy(source), "target": target.long()}

    def __len__(self):
        return len(self.blocks)

    def collater(self, samples, pad_to_length=None):
        return collate(samples, self.dictionary.pad(), self.dictionary.eos(), self.dictionary,
                       pad_to_length=pad_to_length)

    def num_tokens(self, index):
        return self.sizes[index]

    def size(self, index):
        return self.sizes[index]

    def ordered_indices(self):
        """Shuffled, then stably sorted by length: batches of similar sizes, little padding."""
        if self.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch]).permutation(len(self))
        else:
            indices = np.arange(len(self))
        return indices[np.argsort(self.sizes[indices], kind="mergesort")]

    def prefetch(self, indices):
        self.blocks.prefetch(indices)

    @property
    def supports_prefetch(self):
        return getattr(self.blocks, "supports_prefetch", False)
