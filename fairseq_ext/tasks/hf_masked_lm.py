"""``--task hf_masked_lm``: RoBERTa/BERT masked-LM pretraining on data made by ``fairseq-ext binarize``.

The vocabulary comes from the data directory's ``tokenizer.json`` (index ==
tokenizer id), so a BERT WordPiece or RoBERTa BPE vocabulary is kept as it is.
Dynamic masking (new masks every epoch), whole-word or span masking for any
tokenizer family, packed or line-by-line samples, a short-sequence probability.
"""

import logging
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task

from fairseq_ext.data.masked_lm_dataset import HFMaskedLMDataset
from fairseq_ext.data.masking import MaskConfig
from fairseq_ext.tasks.base import BREAK_MODES, TokenizerDataConfig, TokenizerDataTask, data_config

logger = logging.getLogger(__name__)

MASK_UNITS = ChoiceEnum(["subword", "word", "span"])
MASK_SETTINGS = {"unit": "mask_unit"}  # MaskConfig field -> the HFMaskedLMConfig setting where the names differ
BERT = MaskConfig()  # BERT's masking (15%, 80/10/10), the defaults below


@dataclass
class HFMaskedLMConfig(TokenizerDataConfig):
    tokens_per_sample: int = field(default=512, metadata={"help": "longest sample in tokens, bos included"})
    sample_break_mode: BREAK_MODES = field(default="none", metadata={
        "help": "'none' packs the token stream into full blocks, 'complete' packs whole sentences, "
        "'complete_doc' whole sentences of one document, 'eos' one sentence (line) per sample"})
    mask_prob: float = field(default=BERT.mask_prob, metadata={
        "help": "share of tokens (or words) chosen for prediction"})
    leave_unmasked_prob: float = field(default=BERT.leave_unmasked_prob, metadata={
        "help": "share of chosen tokens left unchanged"})
    random_token_prob: float = field(default=BERT.random_token_prob, metadata={
        "help": "share of chosen tokens replaced by a random token (the rest become the mask token)"})
    mask_unit: MASK_UNITS = field(default=BERT.unit, metadata={
        "help": "what is chosen: single 'subword' tokens, whole 'word's (any tokenizer family), or 'span's of "
        "whole words with Poisson lengths (--span-lambda)"})
    span_lambda: float = field(default=BERT.span_lambda, metadata={
        "help": "mean span length in words for --mask-unit span"})
    short_seq_prob: float = field(default=0.0, metadata={
        "help": "probability of cutting a sample to a random shorter length (BERT's short-sequence probability)"})


@register_task("hf_masked_lm", dataclass=HFMaskedLMConfig)
class HFMaskedLMTask(TokenizerDataTask):
    cfg: HFMaskedLMConfig

    def mask_config(self) -> MaskConfig:
        return data_config(MaskConfig, self.cfg, MASK_SETTINGS)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        blocks, split_path = self.load_blocks(split, epoch, combine, append_eos=False)
        self.datasets[split] = HFMaskedLMDataset(blocks, blocks.sizes, self.dictionary, self.mask_config(),
                                                 seed=self.cfg.seed, short_seq_prob=self.cfg.short_seq_prob,
                                                 shuffle=split != "test",
                                                 pad_to_multiple=self.batch_length_multiple())
        logger.info(f"{split}: {len(blocks)} samples from {split_path}")

    def max_positions(self):
        return self.cfg.tokens_per_sample
