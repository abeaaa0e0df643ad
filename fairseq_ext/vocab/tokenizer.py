"""Load any Hugging Face tokenizer and name its special-token roles.

TOK, everywhere in fairseq_ext, is one of
  * a ``tokenizer.json`` file (a ``tokenizers`` serialisation),
  * a directory that ``AutoTokenizer.from_pretrained`` loads (fast tokenizer),
  * a SentencePiece ``.model`` file.

Everything is turned into a ``transformers.PreTrainedTokenizerFast`` whose
special tokens are set, so that roles (bos/pad/eos/unk/mask) are explicit and
``save_pretrained`` writes a directory ``AutoTokenizer`` loads again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fairseq_ext.errors import UserError

logger = logging.getLogger(__name__)

ROLES = ("bos", "pad", "eos", "unk", "mask")

# Token strings that name a role when the tokenizer itself does not say.
# Order matters: the first one present wins.
_ROLE_NAMES = {
    "bos": ("<s>", "[CLS]", "<bos>", "<|startoftext|>"),
    "pad": ("<pad>", "[PAD]"),
    "eos": ("</s>", "[SEP]", "<eos>", "<|endoftext|>"),
    "unk": ("<unk>", "[UNK]"),
    "mask": ("<mask>", "[MASK]"),
}
# The mask of a tokenizer that names none (T5's SentencePiece), when --mask-token does not say:
# T5's first sentinel (code_mlm's masking, code-pairs' span queries).
FALLBACK_MASK_TOKEN = "<extra_id_0>"


class TokenizerError(UserError):
    """A tokenizer could not be loaded or lacks something a caller needs."""


@dataclass(frozen=True)
class SpecialRoles:
    """Token ids of the roles fairseq needs; ``None`` where the tokenizer has none."""

    bos: Optional[int]
    pad: Optional[int]
    eos: Optional[int]
    unk: Optional[int]
    mask: Optional[int]

    def require(self, *roles: str, source: str = "tokenizer") -> None:
        missing = [r for r in roles if getattr(self, r) is None]
        if missing:
            raise TokenizerError(
                f"{source}: tokenizer has no {'/'.join(missing)} token, "
                f"which this task needs (roles found: {self.describe()})"
            )

    def describe(self) -> str:
        return ", ".join(f"{r}={getattr(self, r)}" for r in ROLES)


def load_tokenizer(path: str | os.PathLike):
    """Load TOK (see module docstring) as a ``PreTrainedTokenizerFast`` with roles set."""
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"{path}: no such tokenizer file or directory")
    if path.is_dir():
        tok = _load_directory(path)
    elif path.suffix == ".model":
        tok = _load_sentencepiece(path)
    elif path.name == "tokenizer.json" and (path.parent / "tokenizer_config.json").exists():
        tok = _load_directory(path.parent)
    else:
        tok = _load_tokenizer_json(path)
    _fill_roles_by_name(tok)
    tok.name_or_path = str(path)
    return tok


def _load_directory(path: Path):
    has_json = (path / "tokenizer.json").exists()
    if not has_json and not any(path.glob("*.model")) and not (path / "vocab.txt").exists() and not (
        path / "vocab.json"
    ).exists():
        raise TokenizerError(f"{path}: directory holds no tokenizer (no tokenizer.json, vocab or .model)")
    try:
        if has_json:
            # tokenizer.json does all the encoding; the fast base class reads the special
            # tokens from the config files and, unlike AutoTokenizer, does not import torch.
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:  # vocab files only: let AutoTokenizer convert them
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except Exception as exc:  # transformers raises many kinds here
        raise TokenizerError(_broken_json(path) or f"{path}: could not load the tokenizer: {_one_line(exc)}") from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{path}: only a slow tokenizer is available; a fast one (tokenizer.json) is needed")
    config = path / "tokenizer_config.json"
    if config.exists():
        tok.source_tokenizer_class = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    return tok


def _broken_json(path: Path) -> Optional[str]:
    """Which of a tokenizer directory's JSON files does not parse, and where (for the error message)."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        try:
            json.loads((path / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
            return f"{path / name}{where}: not valid JSON ({getattr(exc, 'msg', None) or _one_line(exc)})"
    return None


def save_tokenizer(tok, out_dir: str | os.PathLike) -> list[str]:
    """Write ``tok`` so that ``AutoTokenizer.from_pretrained(out_dir)`` loads it (same class as its source)."""
    written = [os.path.basename(p) for p in tok.save_pretrained(str(out_dir))]
    source_class = getattr(tok, "source_tokenizer_class", None)
    config = Path(out_dir) / "tokenizer_config.json"
    if source_class and config.exists():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["tokenizer_class"] = source_class
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return written


def _load_tokenizer_json(path: Path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise TokenizerError(f"{path}: not a valid tokenizer.json: {_one_line(exc)}") from None
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def _load_sentencepiece(path: Path):
    import sentencepiece as spm
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except Exception as exc:
        raise TokenizerError(f"{path}: not a SentencePiece model: {_one_line(exc)}") from None

    class _Slow:  # the little SpmConverter needs from a slow tokenizer
        vocab_file = str(path)
        legacy = False
        add_prefix_space = True

    backend = SpmConverter(_Slow()).converted()
    roles = {"bos": sp.bos_id(), "pad": sp.pad_id(), "eos": sp.eos_id(), "unk": sp.unk_id()}
    kwargs = {f"{r}_token": sp.id_to_piece(i) for r, i in roles.items() if i >= 0}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def _fill_roles_by_name(tok) -> None:
    """Give roles to well-known special strings when the tokenizer names none."""
    vocab = tok.get_vocab()
    for role, names in _ROLE_NAMES.items():
        if _role_id(tok, role) is not None:
            continue
        for name in names:
            if name in vocab:
                # BERT-style names go to cls/sep, the roles BERT code looks at.
                attr = {"[CLS]": "cls", "[SEP]": "sep"}.get(name, role)
                setattr(tok, f"{attr}_token", name)
                break


def _role_id(tok, role: str) -> Optional[int]:
    """The id fairseq uses for ``role``: BERT's [CLS]/[SEP] serve as bos/eos."""
    fallback = {"bos": "cls", "eos": "sep"}.get(role)
    for attr in (role, fallback):
        if attr is None:
            continue
        token = getattr(tok, f"{attr}_token", None)
        if token is not None:
            return tok.convert_tokens_to_ids(token)
    return None


def special_roles(tok) -> SpecialRoles:
    return SpecialRoles(**{r: _role_id(tok, r) for r in ROLES})


def special_token_ids(tok) -> list[int]:
    """Every id the tokenizer treats as special: roles plus special added tokens."""
    ids = {i for i in (_role_id(tok, r) for r in ROLES) if i is not None}
    for idx, added in tok.backend_tokenizer.get_added_tokens_decoder().items():
        if added.special:
            ids.add(idx)
    ids.update(tok.all_special_ids)
    return sorted(ids)


def vocab_in_id_order(tok) -> tuple[list[str], int]:
    """All tokens by id. Holes (ids no token maps to) are filled with placeholders.

    Returns the list and the number of holes filled.
    """
    vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1 if vocab else 0
    symbols: list[Optional[str]] = [None] * size
    for token, idx in vocab.items():
        symbols[idx] = token
    holes = 0
    for idx, token in enumerate(symbols):
        if token is None:
            symbols[idx] = f"<fairseq_ext_unused_{idx}>"
            holes += 1
    return symbols, holes  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


