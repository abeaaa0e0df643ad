"""What the denoising and masked-LM datasets share: token blocks, per-sample generators, batching order."""

from __future__ import annotations

import numpy as np
from fairseq.data import BaseWrapperDataset, FairseqDataset, TokenBlockDataset


class SeededBlockDataset(FairseqDataset):
    """Wraps token blocks; each sample gets a generator seeded with ``(seed, epoch, index)``.

    So a sample is the same whatever the number of data-loader workers or the order of access.
    """

    def __init__(self, blocks, sizes, dictionary, seed: int, shuffle: bool = True, pad_to_multiple: int = 1):
        self.blocks = blocks
        self.pad_to_multiple = pad_to_multiple  # a batch's length is padded to a multiple of it (8: tensor cores)
        self.sizes = np.asarray(sizes)
        self.dictionary = dictionary
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 1
        self.special = np.zeros(len(dictionary), dtype=bool)
        self.special[dictionary.special_ids] = True
        self.special[dictionary.tokenizer_size:] = True  # vocabulary padding is never a real token
        self.random_pool = np.flatnonzero(~self.special)  # replacements: any ordinary token

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return True  # only the noise changes with the epoch, not the sizes

    def set_epoch(self, epoch, **unused):
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def padded_length(self, samples, key: str, pad_to_length=None) -> int | None:
        """The length a batch of ``samples[key]`` is padded to: the longest (or ``pad_to_length``, as fairseq
        asks for it) rounded up to ``pad_to_multiple``; None where that changes nothing. For collaters that
        cannot round (fairseq's denoising ``collate``); ``data_utils.collate_tokens`` rounds by itself."""
        asked = (pad_to_length or {}).get(key)
        if self.pad_to_multiple <= 1:
            return asked
        longest = max(asked or 0, max(len(s[key]) for s in samples))
        return -(-longest // self.pad_to_multiple) * self.pad_to_multiple

    def random_tokens(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.random_pool[rng.integers(0, self.random_pool.size, size=n)]

    def __len__(self):
        return len(self.blocks)

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

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """fairseq's batching, keeping every sample.

        fairseq 0.12's ``data_utils.batch_by_size`` drops a last batch whose size is not a multiple
        of ``--required-batch-size-multiple`` (8 by default; facebookresearch/fairseq#5036): a
        validation split of 13 samples was scored on 8, one of 5 on none ("The dataset is empty").
        The multiple is kept for every other batch; the last one holds what is left.
        """
        from fairseq.data.data_utils_fast import batch_by_size_vec

        indices = np.asarray(indices, dtype=np.int64)
        return batch_by_size_vec(indices, self.sizes[indices].astype(np.int64),
                                 -1 if max_tokens is None else int(max_tokens),
                                 -1 if max_sentences is None else max_sentences, required_batch_size_multiple)

    def prefetch(self, indices):
        self.blocks.prefetch(indices)

    @property
    def supports_prefetch(self):
        return getattr(self.blocks, "supports_prefetch", False)


def check_sentence_lengths(sizes, limit: int, break_mode: str, split_path: str, tokens_per_sample: int) -> None:
    """Whole-sentence modes cannot cut a sentence: each must fit a sample."""
    from fairseq_ext.vocab.tokenizer import TokenizerError

    too_long = int((np.asarray(sizes) > limit).sum())
    if break_mode != "none" and too_long:
        raise TokenizerError(
            f"{split_path}: {too_long} sentences are longer than --tokens-per-sample {tokens_per_sample} allows "
            f"({limit} tokens with eos); binarize with `fairseq-ext binarize --max-line-tokens {limit}` "
            "or raise --tokens-per-sample"
        )


class SentenceItems(BaseWrapperDataset):
    """One sentence per sample (break mode 'eos'); empty document separators are dropped.

    (fairseq's own TokenBlockDataset 'eos' mode calls ``np.compat``, gone in numpy 2.)
    """

    def __init__(self, dataset, sizes):
        super().__init__(dataset)
        sizes = np.asarray(sizes)
        self.keep = np.flatnonzero(sizes > 0)
        self._sizes = sizes[self.keep]

    def __getitem__(self, index):
        return self.dataset[int(self.keep[index])]

    def __len__(self):
        return len(self.keep)

    @property
    def sizes(self):
        return self._sizes

    def num_tokens(self, index):
        return self._sizes[index]

    def size(self, index):
        return self._sizes[index]

    def prefetch(self, indices):
        self.dataset.prefetch(self.keep[indices])


def token_blocks(dataset, block_size: int, pad: int, eos: int, break_mode: str):
    """Samples of at most ``block_size`` tokens; documents end at the binarizer's empty items.

    'eos' and 'none' do not use documents, so the empty items are dropped first: fairseq's 'none'
    slicing loses the first token after an empty item when a block ends right before it.
    """
    if break_mode in ("eos", "none"):
        dataset = SentenceItems(dataset, dataset.sizes)
        if break_mode == "eos":
            return dataset
    return TokenBlockDataset(dataset, dataset.sizes, block_size, pad=pad, eos=eos, break_mode=break_mode,
                             document_sep_len=0)
