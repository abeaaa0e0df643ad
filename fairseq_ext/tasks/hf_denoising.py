"""``--task hf_denoising``: BART pretraining on data made by ``fairseq-ext binarize``.

The vocabulary comes from the data directory's ``tokenizer.json`` (index ==
tokenizer id); sentence boundaries come from the data (every sentence ends
with eos), so sentence permutation works with any tokenizer; whole-word
masking works for byte-level BPE, SentencePiece and WordPiece alike.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from fairseq.data import (
    IdDataset,
    ListDataset,
    NestedDictionaryDataset,
    NumelDataset,
    PadDataset,
    PrependTokenDataset,
    StripTokenDataset,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task

from fairseq_ext.data.denoising_dataset import HFDenoisingDataset
from fairseq_ext.data.noising import NoiseConfig
from fairseq_ext.tasks.base import BREAK_MODES, TokenizerDataConfig, TokenizerDataTask, data_config

logger = logging.getLogger(__name__)

MASK_LENGTHS = ChoiceEnum(["subword", "word", "span-poisson"])
# NoiseConfig field -> the HFDenoisingConfig setting (fairseq's denoising flag) where the names differ
NOISE_SETTINGS = {"mask_ratio": "mask", "random_ratio": "mask_random", "insert_ratio": "insert",
                  "rotate_ratio": "rotate", "permute_sentence_ratio": "permute_sentences"}
BART = NoiseConfig()  # BART's noise (the paper's), the defaults below


@dataclass
class HFDenoisingConfig(TokenizerDataConfig):
    tokens_per_sample: int = field(default=512, metadata={
        "help": "longest sample in tokens, bos and eos included"})
    sample_break_mode: BREAK_MODES = field(default="complete_doc", metadata={
        "help": "how sentences become samples: 'complete_doc' packs whole sentences of one document, "
        "'complete' packs whole sentences across documents, 'none' cuts the token stream into equal blocks, "
        "'eos' makes one sample per sentence"})
    mask: float = field(default=BART.mask_ratio, metadata={"help": "share of words (or subwords) to mask"})
    mask_random: float = field(default=BART.random_ratio, metadata={
        "help": "share of masked spans replaced by a random token instead of the mask token"})
    insert: float = field(default=BART.insert_ratio, metadata={
        "help": "insert this share (of the sample length) of extra mask/random tokens"})
    permute_sentences: float = field(default=BART.permute_sentence_ratio, metadata={
        "help": "share of sentences to shuffle in a sample"})
    rotate: float = field(default=BART.rotate_ratio, metadata={
        "help": "probability of rotating a sample to start at a random token"})
    poisson_lambda: float = field(default=BART.poisson_lambda, metadata={
        "help": "mean span length (in words) for --mask-length span-poisson"})
    mask_length: MASK_LENGTHS = field(default=BART.mask_length, metadata={
        "help": "unit of masking: 'subword' tokens, whole 'word's, or spans of whole words with Poisson lengths"})
    replace_length: int = field(default=BART.replace_length, metadata={
        "help": "what a masked span becomes: 1 one mask token, 0 nothing (deleted), -1 one mask per token"})
    max_source_positions: int = field(default=1024, metadata={"help": "max number of tokens in the source"})
    max_target_positions: int = field(default=1024, metadata={"help": "max number of tokens in the target"})


@register_task("hf_denoising", dataclass=HFDenoisingConfig)
class HFDenoisingTask(TokenizerDataTask):
    cfg: HFDenoisingConfig

    def noise_config(self) -> NoiseConfig:
        return data_config(NoiseConfig, self.cfg, NOISE_SETTINGS)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        blocks, split_path = self.load_blocks(split, epoch, combine, append_eos=True)
        self.datasets[split] = HFDenoisingDataset(
            blocks, blocks.sizes, self.dictionary, self.noise_config(), seed=self.cfg.seed,
            shuffle=split != "test", pad_to_multiple=self.batch_length_multiple(),
        )
        logger.info(f"{split}: {len(blocks)} samples from {split_path}")

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        args = getattr(model, "args", None)
        if args is not None and getattr(args, "task", None) is None:
            # fairseq's BART reads args.task whenever it loads a checkpoint; fairseq-hydra-train's model
            # settings have none, so a hydra run could not resume ("... ensure that the architectures match").
            # The settings of the model built here, not a change to fairseq (see fairseq_ext/runtime/patches.py).
            args.task = "hf_denoising"
        return model

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        """For fairseq's hub interface (``BARTModel.from_pretrained(...).fill_mask / sample``)."""
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        source = ListDataset(src_tokens, src_lengths)
        prev = PrependTokenDataset(StripTokenDataset(source, eos), eos)
        source = PadDataset(source, pad_idx=pad, left_pad=False)
        return NestedDictionaryDataset(
            {"id": IdDataset(), "net_input": {"src_tokens": source, "src_lengths": NumelDataset(source, reduce=False),
                                              "prev_output_tokens": PadDataset(prev, pad_idx=pad, left_pad=False)},
             "target": source},
            sizes=[torch.as_tensor(src_lengths).cpu().numpy()],  # np.array(tensor) warns under numpy 2
        )

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)


def noise_flags(noise: NoiseConfig = BART) -> list[str]:
    """``noise`` as fairseq-train flags (``--mask 0.3 ...``), which fairseq's own ``denoising`` task takes too
    (a whole number is written as one: its ``--permute-sentences`` is an integer)."""
    flags = []
    for f in dataclasses.fields(noise):
        value = getattr(noise, f.name)
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        flags += [f"--{NOISE_SETTINGS.get(f.name, f.name).replace('_', '-')}", text]
    return flags
