"""Which tokens start a word, for every tokenizer family (whole-word masking, identifier masking).

Byte-level BPE marks word starts with ``Ġ``, SentencePiece with ``▁``; WordPiece marks
continuations with ``##``. Special tokens and fairseq's padding rows always start one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from fairseq_ext.vocab.tokenizer import TokenizerError, special_token_ids


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
