"""``--task hf_masked_lm``: RoBERTa/BERT masked-LM pretraining on data made by ``fairseq-ext binarize``.

The vocabulary comes from the data directory's ``tokenizer.json`` (index ==
tokenizer id), so a BERT WordPiece or RoBERTa BPE vocabulary is kept as it is.
Dynamic masking (new masks every epoch), whole-word or span masking for any
tokenizer family, packed or line-by-line samples, a short-sequence probability.
"""

import logging
from dataclasses import dataclass, field

from fairseq.data import PrependTokenDataset
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task

from fairseq_ext.data.block_dataset import check_sentence_lengths, token_blocks
from fairseq_ext.data.masked_lm_dataset import HFMaskedLMDataset
from fairseq_ext.data.masking import MaskConfig
from fairseq_ext.tasks.base import BREAK_MODES, TokenizerDataConfig, TokenizerDataTask

logger = logging.getLogger(__name__)

MASK_UNITS = ChoiceEnum(["subword", "word", "span"])


@dataclass
class HFMaskedLMConfig(TokenizerDataConfig):
    tokens_per_sample: int = field(default=512, metadata={"help": "longest sample in tokens, bos included"})
    sample_break_mode: BREAK_MODES = field(default="none", metadata={
        "help": "'none' packs the token stream into full blocks, 'complete' packs whole sentences, "
        "'complete_doc' whole sentences of one document, 'eos' one sentence (line) per sample"})
    mask_prob: float = field(default=0.15, metadata={"help": "share of tokens (or words) chosen for prediction"})
    leave_unmasked_prob: float = field(default=0.1, metadata={"help": "share of chosen tokens left unchanged"})
    random_token_prob: float = field(default=0.1, metadata={
        "help": "share of chosen tokens replaced by a random token (the rest become the mask token)"})
    mask_unit: MASK_UNITS = field(default="subword", metadata={
        "help": "what is chosen: single 'subword' tokens, whole 'word's (any tokenizer family), or 'span's of "
        "whole words with Poisson lengths (--span-lambda)"})
    span_lambda: float = field(default=3.0, metadata={"help": "mean span length in words for --mask-unit span"})
    short_seq_prob: float = field(default=0.0, metadata={
        "help": "probability of cutting a sample to a random shorter length (BERT's short-sequence probability)"})


@register_task("hf_masked_lm", dataclass=HFMaskedLMConfig)
class HFMaskedLMTask(TokenizerDataTask):
    cfg: HFMaskedLMConfig

    def mask_config(self) -> MaskConfig:
        cfg = self.cfg
        return MaskConfig(mask_prob=cfg.mask_prob, leave_unmasked_prob=cfg.leave_unmasked_prob,
                          random_token_prob=cfg.random_token_prob, unit=str(cfg.mask_unit),
                          span_lambda=cfg.span_lambda)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        dataset, split_path = self.load_split(split, epoch, combine)
        mode = str(self.cfg.sample_break_mode)
        check_sentence_lengths(dataset.sizes, self.cfg.tokens_per_sample - 1, mode, split_path,
                               self.cfg.tokens_per_sample)
        blocks = token_blocks(dataset, self.cfg.tokens_per_sample - 1,  # room for bos
                              self.dictionary.pad(), self.dictionary.eos(), mode)
        blocks = PrependTokenDataset(blocks, self.dictionary.bos())
        self.datasets[split] = HFMaskedLMDataset(blocks, blocks.sizes, self.dictionary, self.mask_config(),
                                                 seed=self.cfg.seed, short_seq_prob=self.cfg.short_seq_prob,
                                                 shuffle=split != "test")
        logger.info(f"{split}: {len(blocks)} samples from {split_path}")

    def max_positions(self):
        return self.cfg.tokens_per_sample
