"""Reading fairseq checkpoints for conversion: settings, dictionary, model, model card."""

from __future__ import annotations

import os
from argparse import Namespace
from pathlib import Path

from fairseq_ext.convert.common import ConversionError, check_weights
from fairseq_ext.convert.settings import task_data_dir
from fairseq_ext.vocab.dict_txt import tokenizer_path_for
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.identity import check_same_tokenizer, recorded_tokenizer
from fairseq_ext.vocab.tokenizer import TokenizerError, load_tokenizer


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A fairseq checkpoint, loaded the safe way (see :mod:`fairseq_ext.runtime.checkpoint_loading`)."""
    from fairseq_ext.serialization import safe_torch_load

    path = Path(path)
    _check_checkpoint_file(path)
    with open(path, "rb") as f:
        try:
            state = safe_torch_load(f, map_location="cpu")
        except (RuntimeError, EOFError, OSError) as exc:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({_short(exc)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' weights)")
    return state


def _check_checkpoint_file(path: Path) -> None:
    """A file ``torch.save`` wrote (a zip archive, or a pickle in the legacy format), else a one-line error."""
    import zipfile

    if path.is_dir():
        hint = next((f"; did you mean {path / n}?" for n in ("checkpoint_best.pt", "checkpoint_last.pt")
                     if (path / n).is_file()), "")
        if not hint and (path / "config.json").is_file():
            hint = " (it looks like a transformers model: import-hf converts those to fairseq)"
        raise ConversionError(f"{path}: is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionError(f"{path}: not a fairseq checkpoint (the file is empty)")
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # a zip, or a pickle (protocol >= 2 starts with 0x80)
        return
    if head == b"PK\x03\x04":
        raise ConversionError(f"{path}: damaged or incomplete checkpoint (its zip archive has no end)")
    raise ConversionError(f"{path}: not a fairseq checkpoint (not a file torch.save writes)")


def _short(exc: BaseException) -> str:
    """The first sentence of the first line of an exception's message."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return line.split(". ")[0].rstrip(".") if len(line) > 100 else line


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


def dictionary_for_rows(tok, rows: int, tok_name, ckpt_name, state: dict | None = None) -> TokenizerDictionary:
    """The tokenizer's dictionary grown by fairseq's padding to ``rows`` entries, or an error naming both.

    A checkpoint ``state`` that records its tokenizer must have been made with this one.
    """
    d = TokenizerDictionary.from_tokenizer(tok)
    recorded = None if state is None else recorded_tokenizer(state, ckpt_name)
    if recorded is not None:
        check_same_tokenizer(recorded, d.identity(), ckpt_name, tok_name)
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


def build_fairseq_model(args: Namespace, dictionary, weights: dict, where="the converted weights"):
    """The fairseq model of ``args`` (every setting, as fairseq-train parses them) holding ``weights``.

    The weights are checked against the model first (names and shapes, :func:`check_weights`), after
    fairseq's own upgrade of old names, so a mismatch is one line naming the weight and ``where``.
    """
    from fairseq.models import ARCH_MODEL_REGISTRY

    args = Namespace(**vars(args))
    if getattr(args, "task", None) is None:  # fairseq's BART reads args.task on load; hydra's settings lack it
        args.task = None
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, _DictionaryTask(dictionary))
    upgraded = dict(weights)  # what load_state_dict compares: the names after fairseq's upgrade_state_dict
    model.upgrade_state_dict(upgraded)
    check_weights(model.state_dict(), upgraded, where, f"the fairseq {args.arch} model")
    model.load_state_dict(weights, strict=True)
    return model.eval()
