"""``--task code_mlm``: masked-LM pretraining on a code dataset directory (``fairseq-ext code-dataset``).

Reads the directory's Arrow ``DatasetDict`` directly (memory-mapped, see
:mod:`fairseq_ext.data.arrow_dataset`) or its fairseq mmap files
(``--data-format``); the vocabulary is the directory's ``tokenizer.json``.
Samples are packed blocks (``--sample-break-mode none``) or one source file
each (``file_truncate`` cuts a long file and counts the tokens dropped,
``file_split`` makes several samples of it). Masking is ``hf_masked_lm``'s
(subword, word, span) plus ``--mask-unit identifier``: every occurrence of
randomly chosen identifiers (CodeT5's masked-identifier objective), Python's
keywords never chosen. Tokenizers without bos (T5) work; without a mask token,
``--mask-token`` names the one to use (default ``<extra_id_0>`` when present).
"""

import keyword
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq.data import PrependTokenDataset
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from omegaconf import MISSING

from fairseq_ext.data.arrow_dataset import ArrowTokenDataset, CodeDataError, FileSamples, is_arrow_dataset_dir
from fairseq_ext.data.block_dataset import token_blocks
from fairseq_ext.data.masked_lm_dataset import HFMaskedLMDataset
from fairseq_ext.data.masking import IdentifierVocab, identifier_vocab
from fairseq_ext.tasks.hf_masked_lm import BERT, HFMaskedLMConfig, HFMaskedLMTask
from fairseq_ext.vocab.tokenizer import FALLBACK_MASK_TOKEN, TokenizerError

logger = logging.getLogger(__name__)

CODE_BREAK_MODES = ChoiceEnum(["none", "file_truncate", "file_split"])
CODE_MASK_UNITS = ChoiceEnum(["subword", "word", "span", "identifier"])
DATA_FORMATS = ChoiceEnum(["auto", "arrow", "mmap"])


@dataclass
class CodeMLMConfig(HFMaskedLMConfig):
    data: str = field(default=MISSING, metadata={
        "help": "code dataset directory made by `fairseq-ext code-dataset` (several joined by ':' are used "
        "in turn by epoch)"})
    data_format: DATA_FORMATS = field(default="auto", metadata={
        "help": "'arrow' reads the DatasetDict (save_to_disk) directly, 'mmap' the train.bin/.idx files of "
        "`code-dataset --format mmap`; 'auto' is arrow when DATA has dataset_dict.json"})
    sample_break_mode: CODE_BREAK_MODES = field(default="none", metadata={
        "help": "'none' packs the files' tokens into full blocks; 'file_truncate' makes one sample per file, "
        "cut at --tokens-per-sample (the files cut and tokens dropped are logged); 'file_split' one file "
        "per sample, a longer file split into several samples"})
    mask_unit: CODE_MASK_UNITS = field(default=BERT.unit, metadata={
        "help": "what is chosen: 'subword' tokens, whole 'word's, 'span's of words (--span-lambda), or "
        "'identifier's: every occurrence of randomly chosen identifiers (Python keywords never)"})
    mask_token: Optional[str] = field(default=None, metadata={
        "help": "token used as the mask (default: the tokenizer's mask token, else <extra_id_0> when the "
        "vocabulary has it); needed for a tokenizer without either"})


@register_task("code_mlm", dataclass=CodeMLMConfig)
class CodeMLMTask(HFMaskedLMTask):
    cfg: CodeMLMConfig

    REQUIRED_ROLES = ("eos", "pad")  # bos is prepended when the tokenizer has one; the mask, see --mask-token

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        task = super().setup_task(cfg, **kwargs)
        task.dictionary.mask_index = task.resolve_mask_token()
        task.dictionary.special_ids = np.union1d(task.dictionary.special_ids, [task.dictionary.mask_index])
        logger.info(f"mask token: {task.dictionary[task.dictionary.mask_index]!r} "
                    f"(id {task.dictionary.mask_index})")
        return task

    def resolve_mask_token(self) -> int:
        d, name = self.dictionary, self.cfg.mask_token
        if name is not None:
            index = d.indices.get(name)
            if index is None or index >= d.tokenizer_size:
                raise TokenizerError(f"{self.tokenizer_source}: no token {name!r} in the vocabulary (--mask-token)")
            return index
        if d.mask_index is not None:
            return d.mask_index
        if FALLBACK_MASK_TOKEN in d.indices:
            return d.indices[FALLBACK_MASK_TOKEN]
        raise TokenizerError(f"{self.tokenizer_source}: tokenizer has no mask token and no {FALLBACK_MASK_TOKEN}; "
                             "name one of its tokens with --mask-token TOKEN")

    def data_format(self, data_path: str) -> str:
        fmt = str(self.cfg.data_format)
        return ("arrow" if is_arrow_dataset_dir(data_path) else "mmap") if fmt == "auto" else fmt

    def load_items(self, split: str, epoch: int, combine: bool):
        """(one item per file: its ids then eos, a description for the log) of this epoch's directory."""
        data_path = self.data_dir(split, epoch)
        if self.data_format(data_path) == "arrow":
            self.check_same_vocabulary(data_path)
            return ArrowTokenDataset(data_path, split, self.dictionary.eos()), f"{data_path} ({split}, Arrow)"
        if not os.path.isfile(os.path.join(data_path, f"{split}.idx")):
            raise CodeDataError(f"{data_path}: no {split}.bin/.idx (the mmap format: `fairseq-ext code-dataset "
                                "--format mmap`, or --data-format arrow)")
        dataset, split_path = self.load_split(split, epoch, combine, dataset_impl="mmap", data_path=data_path)
        return dataset, f"{split_path}.bin"

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        items, where = self.load_items(split, epoch, combine)
        d, mode = self.dictionary, str(self.cfg.sample_break_mode)
        room = self.cfg.tokens_per_sample - (d.bos_index is not None)  # room for bos, when there is one
        if mode == "none":
            blocks = token_blocks(items, room, d.pad(), d.eos(), "none")
            detail = "packed"
        else:
            blocks = FileSamples(items, items.sizes, room, split_long=mode == "file_split")
            detail = (f"{blocks.files_cut} files longer than {room} tokens "
                      + (f"split, {len(blocks) - len(items)} extra samples" if mode == "file_split"
                         else f"cut, {blocks.tokens_dropped} tokens dropped"))
        if d.bos_index is not None:
            blocks = PrependTokenDataset(blocks, d.bos())
        identifiers = self.identifiers() if str(self.cfg.mask_unit) == "identifier" else None
        self.datasets[split] = HFMaskedLMDataset(
            blocks, blocks.sizes, d, self.mask_config(), seed=self.cfg.seed, short_seq_prob=self.cfg.short_seq_prob,
            shuffle=split != "test", identifiers=identifiers,
            pad_to_multiple=self.batch_length_multiple())
        logger.info(f"{split}: {len(blocks)} samples ({detail}) from {len(items)} files, "
                    f"{int(items.sizes.sum())} tokens with eos, in {where}")

    def identifiers(self) -> IdentifierVocab:
        """The vocabulary's identifier tables; Python keywords (every spelling) are excluded."""
        if getattr(self, "_identifiers", None) is None:
            d = self.dictionary
            special = np.zeros(len(d), dtype=bool)
            special[d.special_ids] = True
            special[d.tokenizer_size:] = True
            excluded = [seq for word in keyword.kwlist for seq in d.word_spellings(word)]
            self._identifiers = identifier_vocab(d.word_surfaces(), d.word_starts(), special, excluded)
        return self._identifiers
