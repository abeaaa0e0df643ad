"""Hugging Face directory -> fairseq checkpoint that ``fairseq-train --restore-file`` continues from.

OUT gets ``checkpoint.pt``, the tokenizer (``tokenizer.json`` ...), ``dict.txt``,
``model_args.txt`` (the fairseq-train flags that rebuild this model) and
``hydra_overrides.txt`` (the same for fairseq-hydra-train):
OUT is itself a valid data directory for the vocabulary, so ``binarize`` new
text with OUT as the tokenizer and the ids stay the original model's.

The directory's ``model_type`` picks its family in
:data:`fairseq_ext.convert.registry.FAMILIES` (BART, BERT, RoBERTa, ...), which
reads the weights, gives the fairseq model flags and weights, and checks parity;
this module only writes what every family writes.

A sentence-transformers directory (``modules.json``), or a bare encoder given ``pooling``, imports as the
family's contrastive model with the directory's pooling, projection and normalisation
(:mod:`fairseq_ext.convert.st_import`), trained by ``code_contrastive``: its embeddings must equal
``SentenceTransformer(DIR)``'s before anything is written.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fairseq_ext.convert import st_import
from fairseq_ext.convert.checkpoint_io import build_fairseq_model
from fairseq_ext.convert.common import ConversionError, check_parity
from fairseq_ext.convert.family import FairseqSide
from fairseq_ext.convert.registry import for_model_type
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.vocab.dict_txt import write_dict_txt
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.identity import tokenizer_task_state
from fairseq_ext.vocab.tokenizer import load_tokenizer, save_tokenizer, vocab_in_id_order


@dataclass
class ImportResult:
    out_dir: str
    family: str  # the family's name in FAMILIES
    fairseq_arch: str
    max_abs_diff: float
    vocab: int
    rows: int
    layers: str
    d_model: int
    model_flags: list[str]
    fresh_head: list[str] = field(default_factory=list)  # head weights the directory did not have
    dropped: list[str] = field(default_factory=list)  # weights the directory had that the MLM model does not use
    embedding: Embedding | None = None  # a contrastive import: what its pooled embedding is


@dataclass
class Embedding:
    """What a contrastive import carried and how closely it embeds as sentence-transformers does."""

    modules: list[str]  # "Pooling(mean)", "Dense(32 -> 16)", "Normalize" (or "--pooling mean")
    similarity: str  # the criterion's: cosine or dot
    max_abs_diff: float  # fairseq embed() vs SentenceTransformer, on the texts and padded ids
    max_tokens: int  # the side limit the check (and the checkpoint's task settings) used
    tokens_agree: bool  # the tokenizer's own special tokens give fairseq's inputs (else: compared on fairseq's)
    token_example: str


def hydra_overrides(flags: list[str]) -> list[str]:
    """The same model settings as fairseq-hydra-train overrides (model._name=ARCH ++model.key=value ...)."""
    out, i = [], 0
    while i < len(flags):
        key = flags[i][2:].replace("-", "_")
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        value = flags[i + 1] if has_value else "true"
        out.append(f"model._name={value}" if key == "arch" else f"++model.{key}={value}")
        i += 2 if has_value else 1
    return out


def training_args(data_dir: str, train_flags, flags: list[str], pad_to_multiple: int, length_flags: list[str]):
    """Full fairseq training settings (task, criterion, model) as fairseq-train would parse them."""
    from fairseq import options

    argv = [data_dir, *train_flags, *flags, *length_flags, "--pad-vocab-to-multiple", str(pad_to_multiple)]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def criterion_class(args) -> str:
    """The class name fairseq records for the checkpoint's criterion."""
    from fairseq.criterions import CRITERION_REGISTRY

    return CRITERION_REGISTRY[args.criterion].__name__


def read_hf_dir(hf_dir: Path):
    from transformers import AutoConfig

    if hf_dir.is_file():
        raise ConversionError(f"{hf_dir}: is a file; HF_DIR is a transformers model directory "
                              "(config.json, weights, tokenizer)")
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: no such directory")
    try:
        config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{hf_dir}: not a transformers model directory ({exc})") from None
    family = for_model_type(config.model_type, hf_dir)
    tok = load_tokenizer(hf_dir)
    symbols, _ = vocab_in_id_order(tok)
    if len(symbols) != config.vocab_size:
        raise ConversionError(f"vocabulary mismatch: {hf_dir}/config.json says vocab_size {config.vocab_size}, "
                              f"its tokenizer has {len(symbols)} tokens")
    return family, config, tok, symbols


def fairseq_checkpoint(args, weights: dict, dictionary, hf_dir: Path) -> dict:
    """What fairseq-train writes, for ``weights`` trained by the settings ``args`` (none yet: update 0)."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    with warnings.catch_warnings():  # hydra's deprecation notices about fairseq's own config files
        warnings.simplefilter("ignore", UserWarning)
        cfg = convert_namespace_to_omegaconf(args)
    return {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": weights,
        "criterion": None,
        "optimizer_history": [{"criterion_name": criterion_class(args), "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": tokenizer_task_state(dictionary.identity()),  # checked by the tasks and export-hf
        "extra_state": {"metrics": {}, "previous_training_time": 0, "imported_from": str(hf_dir)},
    }


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, pad_to_multiple: int = 8, seed: int = 0,
              overwrite: bool = False, pooling: str | None = None) -> ImportResult:
    """Convert ``hf_dir``; ``pooling`` (first|mean|max): a bare encoder imported for contrastive training."""
    hf_dir = Path(hf_dir)
    head = st_import.read_pooled_head(hf_dir, pooling) if hf_dir.is_dir() else None
    model_dir = hf_dir if head is None else head.encoder_dir
    family, config, tok, symbols = read_hf_dir(model_dir)
    dictionary = TokenizerDictionary.from_tokenizer(tok, pad_to_multiple=pad_to_multiple)
    if config.pad_token_id is not None and config.pad_token_id != dictionary.pad():
        raise ConversionError(f"{model_dir}: config.json says pad_token_id {config.pad_token_id}, its tokenizer's "
                              f"pad token is id {dictionary.pad()}")
    if head is not None and family.contrastive is None:
        raise ConversionError(f"{model_dir}: a {family.title} model cannot be imported for contrastive training "
                              "(sentence-transformers directories and --pooling take encoders)")
    st_model = None if head is None else st_import.load_sentence_transformer(hf_dir, head)
    loaded = family.load_hf(model_dir, config, seed)
    if head is None:
        fs = family.to_fairseq(loaded, config, dictionary)
        train_flags, length_flags = list(family.train_flags), ["--tokens-per-sample", str(fs.positions)]
    else:
        fs, limit = _contrastive_side(family, loaded, config, dictionary, model_dir, head, st_model)
        train_flags = head.train_flags()
        length_flags = ["--max-query-tokens", str(limit), "--max-key-tokens", str(limit)]
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        args = training_args(str(Path(out_dir).resolve()), train_flags, fs.flags, pad_to_multiple, length_flags)
        fs_model = build_fairseq_model(args, dictionary, fs.weights, model_dir)
        diff = check_parity(family.parity(fs_model, loaded.model, dictionary, fs.positions), model_dir)
        embedding = None
        if head is not None:  # before anything is written: the embeddings sentence-transformers gives
            st_diff, agree, example = st_import.check_embeddings(st_model, fs_model, tok, dictionary, limit, hf_dir)
            embedding = Embedding(head.modules, head.similarity, st_diff, limit, agree, example)
        torch.save(fairseq_checkpoint(args, fs.weights, dictionary, hf_dir), tmp / "checkpoint.pt")
        save_tokenizer(tok, tmp)
        write_dict_txt(symbols, tmp / "dict.txt")
        flags = fs.flags if head is None else [*train_flags, *fs.flags]
        overrides = hydra_overrides(fs.flags) + ([] if head is None else head.hydra_overrides())
        (tmp / "model_args.txt").write_text(" ".join(flags) + "\n", encoding="utf-8")
        (tmp / "hydra_overrides.txt").write_text(" ".join(overrides) + "\n", encoding="utf-8")
    return ImportResult(str(out_dir), family.name, args.arch, diff, len(symbols), len(dictionary), fs.layers,
                        fs.d_model, fs.flags, [*loaded.fresh_head, *fs.fresh_head], [*loaded.dropped, *fs.dropped],
                        embedding)


def _contrastive_side(family, loaded, config, dictionary, model_dir: Path, head, st_model) -> tuple[FairseqSide, int]:
    """The family's contrastive model with the directory's pooling, projection and normalisation, and the side
    limit: the directory's max_seq_length (where encode() cuts), at most the positions the model has (which is
    also where the SentenceTransformer compared with now cuts: a bare encoder's tokenizer may allow more)."""
    fs = family.contrastive(loaded, config, dictionary, model_dir)
    limit = min(fs.positions, int(getattr(st_model, "max_seq_length", None) or fs.positions))
    st_model.max_seq_length = limit
    side = FairseqSide([*fs.flags, *head.model_flags()], {**fs.weights, **head.weights()}, fs.positions, fs.layers,
                       fs.d_model, fs.dropped, fs.fresh_head)
    return side, limit
