"""The one invariant: a fairseq dictionary index equals the Hugging Face tokenizer id, for every token.

Where things are:

* :mod:`~fairseq_ext.vocab.tokenizer` loads TOK (a ``tokenizer.json``, an HF tokenizer directory or a
  SentencePiece ``.model``) and names its special-token roles;
* :mod:`~fairseq_ext.vocab.word_starts` tells which tokens start a word, for every tokenizer family;
* :mod:`~fairseq_ext.vocab.dict_txt` writes and reads ``dict.txt`` in tokenizer-id order;
* :mod:`~fairseq_ext.vocab.identity` records a tokenizer in checkpoints and compares two;
* :mod:`~fairseq_ext.vocab.dictionary` is :class:`TokenizerDictionary`, the fairseq ``Dictionary``
  built from a tokenizer (``fairseq_ext.vocab.TokenizerDictionary``, the name ``dict.txt`` files give).

The names below are importable from here; each loads its module on first use, so that reading a
tokenizer does not import fairseq or torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TokenizerDictionary": "dictionary",
    "TokenizerError": "tokenizer",
    "SpecialRoles": "tokenizer",
    "load_tokenizer": "tokenizer",
    "save_tokenizer": "tokenizer",
    "special_roles": "tokenizer",
    "word_start_rule": "word_starts",
    "read_dict_txt_symbols": "dict_txt",
    "tokenizer_path_for": "dict_txt",
    "write_dict_txt": "dict_txt",
    "TokenizerIdentity": "identity",
    "TokenizerMismatchError": "identity",
    "check_same_tokenizer": "identity",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
