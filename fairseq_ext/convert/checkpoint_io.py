"""Reading fairseq checkpoints for conversion: settings, dictionary, model, model card."""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path

from fairseq_ext.convert.common import ConversionError
from fairseq_ext.tokenizer import TokenizerError, load_tokenizer
from fairseq_ext.vocab import TokenizerDictionary, tokenizer_path_for


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A fairseq checkpoint, loaded the safe way (see :mod:`fairseq_ext.checkpoints`)."""
    from fairseq_ext.checkpoints import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        try:
            state = safe_torch_load(f, map_location="cpu")
        except (RuntimeError, EOFError, OSError) as exc:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' weights)")
    return state


def model_args(state: dict, path) -> Namespace:
    """The model's settings: a Namespace from fairseq-train, a plain dict (``_name`` = arch) from
    fairseq-hydra-train."""
    cfg = state.get("cfg") or {}
    args = cfg.get("model") if isinstance(cfg, dict) else None
    if args is None:
        args = state.get("args")
    if isinstance(args, dict) and args.get("_name"):
        args = Namespace(**args)
        args.arch = getattr(args, "arch", None) or args._name
    if not isinstance(args, Namespace):
        raise ConversionError(f"{path}: checkpoint has no model settings (cfg.model / args)")
    return args


def task_data_dir(state: dict) -> str | None:
    cfg = state.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else None
    data = getattr(task, "data", None) if isinstance(task, Namespace) else (task or {}).get("data")
    if data is None and isinstance(state.get("args"), Namespace):
        data = getattr(state["args"], "data", None)
    return data.split(os.pathsep)[0] if data else None


def checkpoint_tokenizer(state: dict, path, tokenizer=None):
    """TOK given, else the tokenizer.json of the data directory the checkpoint was trained on."""
    if tokenizer is None:
        data = task_data_dir(state)
        if data is None:
            raise ConversionError(f"{path}: checkpoint names no data directory; pass --tokenizer TOK")
        try:
            tokenizer = tokenizer_path_for(data)
        except TokenizerError as exc:
            raise ConversionError(f"{exc}; pass --tokenizer TOK") from None
    return tokenizer, load_tokenizer(tokenizer)


def dictionary_for_rows(tok, rows: int, tok_name, ckpt_name) -> TokenizerDictionary:
    """The tokenizer's dictionary grown by fairseq's padding to ``rows`` entries, or an error naming both."""
    d = TokenizerDictionary.from_tokenizer(tok)
    if rows < d.tokenizer_size or rows - d.tokenizer_size >= 64:
        raise ConversionError(
            f"vocabulary mismatch: {ckpt_name} has {rows} embedding rows, {tok_name} has {d.tokenizer_size} tokens"
        )
    while len(d) < rows:
        d.add_symbol(f"madeupword{len(d) - d.tokenizer_size:04d}", n=0)
    return d


class _DictionaryTask:
    """What fairseq model builders read from a task: its dictionaries."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def fairseq_model_name(args: Namespace, path) -> str:
    """The registered fairseq model (bart, roberta, hf_bert) of a checkpoint's architecture."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    arch = str(getattr(args, "arch", "") or getattr(args, "_name", ""))
    name = ARCH_MODEL_NAME_REGISTRY.get(arch)
    if name not in ("bart", "roberta", "hf_bert"):
        raise ConversionError(f"{path}: unknown architecture {arch!r}: export-hf converts BART (bart_*), "
                              "RoBERTa (roberta_*) and BERT (hf_bert*) checkpoints")
    return name


def build_fairseq_model(args: Namespace, dictionary, weights: dict):
    from fairseq.models import ARCH_MODEL_REGISTRY

    args = Namespace(**vars(args))
    if getattr(args, "task", None) is None:  # fairseq's BART reads args.task on load; hydra's settings lack it
        args.task = None
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, _DictionaryTask(dictionary))
    model.load_state_dict(weights, strict=True)
    return model.eval()
