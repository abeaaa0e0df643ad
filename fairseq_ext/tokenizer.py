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

import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

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


FAIRSEQ_DEFAULT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def dict_txt_start(symbols: list[str]) -> int:
    """First id written to dict.txt: 4 for the RoBERTa/BART layout (fairseq adds those), else 0."""
    return 4 if tuple(symbols[:4]) == FAIRSEQ_DEFAULT_SPECIALS else 0


# First line of a dict.txt that lists ids from 0 (BERT, T5 and every other layout
# without fairseq's <s> <pad> </s> <unk> at 0-3). fairseq's plain Dictionary.load
# would put its own four specials first and shift every id by 4; this line is not
# "<token> <count>" (its last field is not a number), so plain fairseq refuses the
# file and its error quotes the line up to that last field. TokenizerDictionary
# skips it; dict.txt files written before it existed load as before.
DICT_TXT_HEADER = (
    "#fairseq_ext: token ids start at 0 in this dict.txt (BERT/T5 layout) and plain fairseq would "
    "shift every id by its own <s> <pad> </s> <unk>; read it with --user-dir fairseq_ext and a "
    "fairseq_ext task (hf_masked_lm, hf_denoising) or fairseq_ext.vocab.TokenizerDictionary.load #"
)


def is_dict_txt_header(line: str) -> bool:
    return line.startswith("#fairseq_ext:") and not line.rstrip().rpartition(" ")[2].lstrip("-").isdigit()


def write_dict_txt(symbols: list[str], f) -> None:
    """dict.txt for fairseq's tools: tokens in id order, one ``token 1`` line each (path or open file).

    The RoBERTa/BART layout leaves out the four specials, which plain fairseq
    adds itself; every other layout starts with :data:`DICT_TXT_HEADER`.
    """
    start = dict_txt_start(symbols)
    lines = itertools.chain([DICT_TXT_HEADER + "\n"] if start == 0 else [], (f"{sym} 1\n" for sym in symbols[start:]))
    if isinstance(f, (str, os.PathLike)):
        with open(f, "w", encoding="utf-8") as fd:
            fd.writelines(lines)
    else:
        f.writelines(lines)


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


def word_start_rule(tok) -> Callable[[str], bool]:
    """A predicate telling whether a token string starts a word.

    Byte-level BPE marks word starts with ``Ġ``, SentencePiece with ``▁``;
    WordPiece marks continuations with ``##``. Special tokens always start one.

    >>> from tokenizers import Tokenizer, models
    >>> from transformers import PreTrainedTokenizerFast
    >>> wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "[CLS]": 1, "play": 2, "##ing": 3}, unk_token="[UNK]"))
    >>> rule = word_start_rule(PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]"))
    >>> rule("play"), rule("##ing"), rule("[CLS]")
    (True, False, True)
    """
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    specials = {tok.convert_ids_to_tokens(i) for i in special_token_ids(tok)}
    if model.get("type") == "WordLevel":  # every token is a whole word
        return _PrefixRule("", frozenset(specials))
    if model.get("type") == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or "##"
        return _WordPieceRule(prefix, frozenset(specials))
    components = json.dumps([spec.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")])
    if '"ByteLevel"' in components:
        return _PrefixRule("\u0120", frozenset(specials))
    if '"Metaspace"' in components:
        return _PrefixRule(_metaspace_char(spec), frozenset(specials))
    if model.get("type") == "BPE" and model.get("continuing_subword_prefix"):
        return _WordPieceRule(model["continuing_subword_prefix"], frozenset(specials))
    raise TokenizerError(
        f"{tok.name_or_path}: cannot tell word starts for this tokenizer "
        "(neither byte-level, SentencePiece-style nor WordPiece)"
    )


def _metaspace_char(spec: dict) -> str:
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Metaspace":
                return node.get("replacement", "\u2581")
            for value in node.values():
                found = walk(value)
                if found:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = walk(value)
                if found:
                    return found
        return None

    return walk(spec) or "\u2581"


@dataclass(frozen=True)
class _PrefixRule:
    prefix: str
    specials: frozenset

    def __call__(self, token: str) -> bool:
        return token.startswith(self.prefix) or token in self.specials or _is_filler(token)

    def surface(self, token: str) -> str:
        """The token's text without the word-start marker (``Ġfoo`` -> ``foo``)."""
        return token[len(self.prefix):] if self.prefix and token.startswith(self.prefix) else token

    def spellings(self, word: str) -> tuple[str, ...]:
        """The pre-tokenized forms of ``word`` the tokenizer model sees: after a space, and not."""
        return (self.prefix + word, word) if self.prefix else (word,)


@dataclass(frozen=True)
class _WordPieceRule:
    continuation: str
    specials: frozenset

    def __call__(self, token: str) -> bool:
        return not token.startswith(self.continuation) or token in self.specials

    def surface(self, token: str) -> str:
        """The token's text without the continuation marker (``##ing`` -> ``ing``)."""
        return token[len(self.continuation):] if token.startswith(self.continuation) else token

    def spellings(self, word: str) -> tuple[str, ...]:
        return (word,)


def _is_filler(token: str) -> bool:
    return token.startswith("madeupword") or token.startswith("<fairseq_ext_unused_")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class TokenizerMismatchError(TokenizerError):
    """A checkpoint and a tokenizer (or data directory) disagree on the vocabulary."""


@dataclass(frozen=True)
class TokenizerIdentity:
    """What a model's embedding rows depend on: vocabulary size, role ids, and the vocabulary itself.

    Stored in checkpoints as :meth:`to_dict` (plain types only). ``special_tokens``: the role
    tokens as ``(id, token)`` pairs by id; ``vocab_sha256``: a hash of the tokens in id order.
    """

    size: int
    roles: tuple  # ((role, id or None), ...) in ROLES order
    special_tokens: tuple  # ((id, token), ...) sorted by id
    vocab_sha256: str

    @classmethod
    def of(cls, symbols: list[str], roles: SpecialRoles) -> TokenizerIdentity:
        """The identity of a vocabulary in id order (``symbols``) with its role ids."""
        ids = sorted({i for i in (getattr(roles, r) for r in ROLES) if i is not None})
        digest = hashlib.sha256(json.dumps(list(symbols), ensure_ascii=False).encode("utf-8")).hexdigest()
        return cls(len(symbols), tuple((r, getattr(roles, r)) for r in ROLES),
                   tuple((i, symbols[i]) for i in ids), digest)

    def to_dict(self) -> dict:
        return {"size": self.size, "roles": dict(self.roles),
                "special_tokens": [[i, t] for i, t in self.special_tokens], "vocab_sha256": self.vocab_sha256}

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerIdentity:
        roles = d["roles"]
        return cls(int(d["size"]), tuple((r, roles.get(r)) for r in ROLES),
                   tuple((int(i), str(t)) for i, t in d["special_tokens"]), str(d["vocab_sha256"]))

    def describe(self) -> str:
        """``30522 tokens ([PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103; vocabulary sha256 1a2b3c4d5e6f)``"""
        specials = " ".join(f"{t}={i}" for i, t in self.special_tokens)
        return f"{self.size} tokens ({specials}; vocabulary sha256 {self.vocab_sha256[:12]})"


def check_same_tokenizer(recorded: TokenizerIdentity, actual: TokenizerIdentity, checkpoint, source) -> None:
    """Raise :class:`TokenizerMismatchError` naming both sides unless ``actual`` is ``recorded``."""
    if recorded != actual:
        raise TokenizerMismatchError(
            f"checkpoint {checkpoint} was made with a tokenizer of {recorded.describe()}; "
            f"{source} has {actual.describe()}"
        )
