"""A tokenizer's identity (size, role ids, vocabulary hash), recorded in every checkpoint and checked.

Every checkpoint fairseq_ext writes records its tokenizer's identity under
``task_state["tokenizer"]`` (:func:`tokenizer_task_state`). Before a checkpoint's weights
go into a task's model, the task compares it with the data's tokenizer (see
:meth:`fairseq_ext.tasks.base.TokenizerDataTask.check_checkpoint`), so a checkpoint made with
another tokenizer stops with one line naming both sides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from fairseq_ext.errors import UserError
from fairseq_ext.vocab.tokenizer import ROLES, SpecialRoles, TokenizerError


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


def check_same_tokenizer(recorded: TokenizerIdentity, actual: TokenizerIdentity, checkpoint, source,
                         holder: str = "checkpoint") -> None:
    """Raise :class:`TokenizerMismatchError` naming both sides unless ``actual`` is ``recorded``; ``holder`` says
    what ``checkpoint`` is (a checkpoint, or a model directory)."""
    if recorded != actual:
        raise TokenizerMismatchError(
            f"{holder} {checkpoint} was made with a tokenizer of {recorded.describe()}; "
            f"{source} has {actual.describe()}"
        )


TOKENIZER_STATE_KEY = "tokenizer"


def tokenizer_task_state(identity: TokenizerIdentity) -> dict:
    """The ``task_state`` entry that records a checkpoint's tokenizer."""
    return {TOKENIZER_STATE_KEY: identity.to_dict()}


def recorded_tokenizer(state: dict, path) -> TokenizerIdentity | None:
    """The tokenizer a checkpoint records, or ``None`` for one written before identities were recorded."""
    recorded = (state.get("task_state") or {}).get(TOKENIZER_STATE_KEY)
    if recorded is None:
        return None
    try:
        return TokenizerIdentity.from_dict(recorded)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: task_state.{TOKENIZER_STATE_KEY} is not a tokenizer identity") from None
