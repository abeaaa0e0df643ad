"""What every fairseq_ext task shares: the vocabulary from the data's tokenizer, and split loading.

Not a registered task itself; ``hf_denoising``, ``hf_masked_lm`` and ``code_mlm`` build on it.

The tokenizer's identity (size, role ids, vocabulary hash) goes into every
checkpoint fairseq-train writes, as the task's state (``task_state``); a
checkpoint that records one is checked against the data's tokenizer before its
weights are loaded (``--restore-file``, ``--finetune-from-model``, resuming, and
fairseq's ``load_model_ensemble_and_task``), so a mismatch is one line naming
both sides rather than fairseq's "please ensure that the architectures match".

Sharded data (``DATA=shard0:shard1:...``, what ``fairseq-ext binarize --shards``
writes): epoch k trains on the ((k-1) mod N)-th directory, fairseq reloads the
train split every epoch (``has_sharded_data``), validation and test always come
from the first directory, and every directory must hold the first one's
tokenizer (checked once, at start).
"""

import dataclasses
import filecmp
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, TypeVar

import torch
from fairseq.data import AppendTokenDataset, PrependTokenDataset, data_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II, MISSING

from fairseq_ext.data.block_dataset import check_sentence_lengths, token_blocks
from fairseq_ext.errors import UserError
from fairseq_ext.models.init import init_normal_
from fairseq_ext.models.presets import record_setting
from fairseq_ext.vocab.dict_txt import tokenizer_path_for
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.identity import check_same_tokenizer, recorded_tokenizer, tokenizer_task_state
from fairseq_ext.vocab.tokenizer import TokenizerError

logger = logging.getLogger(__name__)

BREAK_MODES = ChoiceEnum(["none", "complete", "complete_doc", "eos"])
Settings = TypeVar("Settings")


@dataclass
class TokenizerDataConfig(FairseqDataclass):
    """Settings every fairseq_ext task has: where the data (and so the vocabulary) is."""

    data: str = field(default=MISSING, metadata={
        "help": "data directory made by `fairseq-ext binarize` (several joined by ':' are used in turn by epoch)"})
    pad_vocab_to_multiple: int = field(default=8, metadata={
        "help": "pad the embedding rows to a multiple of this (8 suits fp16); padding rows come after the "
        "last tokenizer id and are dropped by export-hf"})
    init_std: float = field(default=0.0, metadata={
        "help": "draw every Linear/Embedding weight of a new model from N(0, INIT_STD) instead of the model's "
        "own initialisation (BART/RoBERTa use 0.02, tuned for 768+ wide models; about d**-0.5 suits narrow "
        "models such as the demo's 128-wide BART); 0 keeps the model's own. Ignored when weights are loaded "
        "from a checkpoint"})
    pad_to_multiple: int = field(default=0, metadata={
        "help": "pad each batch's length to a multiple of this (tensor cores want 8; padding is masked, so "
        "results do not change); 0: 8 when training on CUDA, 1 on a CPU (--cpu, or no GPU: padding is only more "
        "work there)"})
    compile_model: bool = field(default=False, metadata={
        "help": "train the model through torch.compile (in place: checkpoints and exports are unchanged); "
        "compiling takes minutes at the start, and pays where kernel launches dominate (GPUs, small models)"})
    seed: int = II("common.seed")
    cpu: bool = II("common.cpu")
    dataset_impl: Optional[str] = II("dataset.dataset_impl")


class TokenizerDataTask(FairseqTask):
    """A task whose dictionary is the data directory's tokenizer (index == tokenizer id).

    Its config is a :class:`TokenizerDataConfig`.
    """

    REQUIRED_ROLES = ("bos", "eos", "pad", "mask")

    def __init__(self, cfg, dictionary: TokenizerDictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._checked_dirs: set[str] = set()
        self.started_from: str | None = None  # the import-hf directory the run started from (check_checkpoint)

    @classmethod
    def load_dictionary(cls, filename):
        return TokenizerDictionary.load(filename)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        paths = data_paths(cfg.data)
        dictionary = cls.load_dictionary(os.path.join(paths[0], "dict.txt"))
        dictionary.require(*cls.REQUIRED_ROLES, source=os.path.join(paths[0], "tokenizer.json"))
        if cfg.pad_vocab_to_multiple > 1:
            dictionary.pad_to_multiple_(cfg.pad_vocab_to_multiple)
        logger.info(f"dictionary: {len(dictionary)} types ({dictionary.tokenizer_size} tokenizer ids)")
        task = cls(cfg, dictionary)
        for path in paths[1:]:  # a shard that does not fit stops the run now, not epochs later
            task.check_same_vocabulary(path)
        if len(paths) > 1:
            logger.info(f"{len(paths)} data directories, one per epoch in turn, all with {paths[0]}'s tokenizer; "
                        f"validation from {paths[0]}")
        return task

    def batch_length_multiple(self) -> int:
        """What ``--pad-to-multiple`` resolves to (see its help)."""
        multiple = getattr(self.cfg, "pad_to_multiple", 0)  # the settings of a checkpoint made before it: 0
        if multiple < 0:
            raise UserError(f"--pad-to-multiple (task.pad_to_multiple) must be 0 (automatic) or more, got {multiple}")
        if multiple == 0:
            on_cpu = getattr(self.cfg, "cpu", False) is True  # --cpu (a config built outside fairseq: unresolved)
            return 8 if torch.cuda.is_available() and not on_cpu else 1
        return multiple

    def data_dir(self, split: str, epoch: int) -> str:
        """The data directory ``split`` is read from in ``epoch``: train cycles through DATA, others use the first.

        Logs the choice for train when DATA names several directories (one line per epoch).
        """
        paths = data_paths(self.cfg.data)
        if split != "train" or len(paths) == 1:
            return paths[0]
        k = (epoch - 1) % len(paths)
        logger.info(f"epoch {epoch}: training on shard {k} of {len(paths)}: {paths[k]}")
        return paths[k]

    def load_split(self, split: str, epoch: int, combine: bool, dataset_impl: Optional[str] = None,
                   data_path: Optional[str] = None):
        """(indexed dataset, its path) of ``split`` in this epoch's data directory (``data_path`` if given).

        ``dataset_impl`` overrides ``--dataset-impl`` (a code dataset directory also holds a ``train/``
        Arrow directory, which fairseq's format guess would take for raw text).
        """
        data_path = data_path or self.data_dir(split, epoch)
        split_path = os.path.join(data_path, split)
        dataset = data_utils.load_indexed_dataset(split_path, self.dictionary, dataset_impl or self.cfg.dataset_impl,
                                                  combine=combine)
        if dataset is None:
            raise FileNotFoundError(f"{split_path}.bin/.idx: no '{split}' split in {data_path}")
        self.check_same_vocabulary(data_path)
        return dataset, split_path

    def load_blocks(self, split: str, epoch: int, combine: bool, append_eos: bool):
        """(samples ``bos tokens ...`` [+ ``eos``], the split's path): ``split``'s sentences packed as
        ``--sample-break-mode`` says into at most ``--tokens-per-sample`` tokens, bos (and, with
        ``append_eos``, a final eos) included. The task's config has both settings.

        A sentence longer than a sample is refused for the modes that keep sentences whole
        (:func:`~fairseq_ext.data.block_dataset.check_sentence_lengths`).
        """
        dataset, split_path = self.load_split(split, epoch, combine)
        d, mode, tokens = self.dictionary, str(self.cfg.sample_break_mode), self.cfg.tokens_per_sample
        room = tokens - 1 - int(append_eos)  # room for bos (and the final eos)
        check_sentence_lengths(dataset.sizes, room, mode, split_path, tokens)
        blocks = PrependTokenDataset(token_blocks(dataset, room, d.pad(), d.eos(), mode), d.bos())
        return (AppendTokenDataset(blocks, d.eos()) if append_eos else blocks), split_path

    def check_same_vocabulary(self, data_path: str) -> None:
        """A later data directory (``DATA1:DATA2``) must hold the first one's tokenizer.

        Cheap for shards of one ``binarize --shards`` (their tokenizer.json files are byte-identical);
        otherwise the two tokenizers' identities (size, role ids, vocabulary hash) are compared.
        """
        first = data_paths(self.cfg.data)[0]
        if os.path.normpath(data_path) == os.path.normpath(first) or data_path in self._checked_dirs:
            return
        if not os.path.isdir(data_path):
            raise TokenizerError(f"{data_path}: no such data directory (in DATA {self.cfg.data})")
        mine, theirs = tokenizer_path_for(first), tokenizer_path_for(data_path)
        if not filecmp.cmp(mine, theirs, shallow=False):
            other = TokenizerDictionary.load(os.path.join(data_path, "dict.txt")).identity()
            if other != self.dictionary.identity():
                raise TokenizerError(f"{data_path} was binarized with a different tokenizer than {first}: "
                                     f"{other.describe()} there, {self.dictionary.identity().describe()} in {first}")
        self._checked_dirs.add(data_path)

    def build_model(self, cfg, from_checkpoint=False):
        if self.cfg.init_std < 0:
            raise ValueError(f"--init-std must be >= 0, got {self.cfg.init_std}")
        model = super().build_model(cfg, from_checkpoint)
        if getattr(cfg, "max_positions", 0) is None:  # taken from this task (code_contrastive: its side limits)
            # fairseq builds from a copy of cfg, and saves cfg: a reader building without the task (export-hf)
            # must find the same limit there
            record_setting(cfg, "max_positions", model.max_positions())
        if self.cfg.init_std > 0 and not from_checkpoint:
            init_normal_(model, self.cfg.init_std)
            logger.info(f"weights drawn from N(0, {self.cfg.init_std}) (--init-std)")
        if getattr(self.cfg, "compile_model", False) and not from_checkpoint:  # fairseq-train's model, not a load
            model.compile(dynamic=True)
            logger.info("the model runs through torch.compile (--compile-model): the first updates compile it")
        return model

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer file the dictionary comes from (the first data directory's)."""
        return os.path.join(data_paths(self.cfg.data)[0], "tokenizer.json")

    def state_dict(self):
        state = {**super().state_dict(), **tokenizer_task_state(self.dictionary.identity())}
        if self.started_from is not None:
            state["started_from"] = self.started_from
        return state

    def load_state_dict(self, state_dict):
        self._check_tokenizer({"task_state": state_dict}, "being loaded")
        super().load_state_dict(state_dict)

    def check_checkpoint(self, state: dict, path) -> None:
        """Called before a checkpoint's weights go into this task's model (see :mod:`fairseq_ext.runtime`).
        What the run started from (an ``import-hf`` directory) is carried on into every checkpoint it writes,
        for export-hf's model card."""
        self._check_tokenizer(state, path)
        self.started_from = ((state.get("extra_state") or {}).get("imported_from")
                             or (state.get("task_state") or {}).get("started_from") or self.started_from)

    def _check_tokenizer(self, state: dict, path) -> None:
        recorded = recorded_tokenizer(state, path)
        if recorded is None:
            logger.info(f"checkpoint {path} records no tokenizer (written before fairseq_ext recorded one); "
                        f"its vocabulary is not checked against {self.tokenizer_source}")
            return
        check_same_tokenizer(recorded, self.dictionary.identity(), path, self.tokenizer_source)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


def data_config(cls: type[Settings], cfg, renamed: Mapping[str, str]) -> Settings:
    """The data layer's frozen settings ``cls`` (``NoiseConfig``, ``MaskConfig``) from a task's config.

    Each field is read from the task setting of the same name, or of the name ``renamed`` gives it
    (``{"mask_ratio": "mask"}``: the flag is ``--mask``); a choice (``ChoiceEnum``) becomes a plain
    string. The task's defaults are ``cls``'s, so the numbers are written once, in ``cls``.
    """
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(cfg, renamed.get(f.name, f.name))
        values[f.name] = str(value) if isinstance(f.default, str) else value
    return cls(**values)


def data_paths(data: str) -> list[str]:
    """The directories of DATA (``dir`` or ``shard0:shard1:...``); empty entries (``a::b``, ``a:``) skipped."""
    paths = [p for p in data.split(os.pathsep) if p]
    if not paths:
        raise TokenizerError(f"DATA {data!r} names no data directory")
    return paths
