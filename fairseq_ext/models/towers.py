"""What every encoder that ``--task code_contrastive`` trains has: a pooled embedding and query/key towers.

A model family becomes trainable on (query, key) pairs by mixing in :class:`PairEncoder` and saying
where its query encoder is (``query_encoder``), how an encoder turns token ids into final hidden states
(``features``) and which parameters its masked-LM head owns (``head_parameters``). The task and the
``info_nce`` criterion only call the interface:

* ``model.embed(tokens, tower="query"|"key") -> (B, D)``: the tower's encoder, then its :class:`Pooler`;
* ``model(query_tokens=Q, key_tokens=K) -> (q, k)``: both sides in one call (one forward, as
  DistributedDataParallel wants);
* ``model.separate_towers``: keys have an encoder and pooler of their own (``key_encoder.*``,
  ``key_pooler.*``), started as copies of the query tower's.

Loading a checkpoint that lacks what the model adds (a key tower, a pooler projection: a masked-LM
checkpoint or an imported encoder continued contrastively) fills it in (:meth:`PairEncoder.fill_towers`):
the key tower as a copy of the checkpoint's query tower, a projection from the model's initialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

TOWERS = ("query", "key")
POOLINGS = ("first", "mean", "max")  # sentence-transformers' cls, mean, max


class Pooler(nn.Module):
    """One vector per sequence: the first token, the mean or the maximum over the non-pad tokens, an
    optional projection without bias (sentence-transformers' ``Dense``), optional L2 normalisation."""

    def __init__(self, dim: int, pooling: str, pooler_dim: int, normalize: bool):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling, self.normalize = pooling, normalize
        self.dense = nn.Linear(dim, pooler_dim, bias=False) if pooler_dim > 0 else None

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """features: (B, T, C); padding_mask: (B, T), True at pad -> (B, D)."""
        if self.pooling == "first":
            x = features[:, 0]
        elif self.pooling == "max":  # a pad position never wins (sentence-transformers sets them to -1e9)
            x = features.masked_fill(padding_mask.unsqueeze(-1), torch.finfo(features.dtype).min).amax(1)
        else:
            keep = (~padding_mask).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
            x = (features * keep).sum(1) / keep.sum(1).clamp(min=1)
        if self.dense is not None:
            x = self.dense(x)
        return F.normalize(x, dim=-1) if self.normalize else x


class PairEncoder:
    """The pair interface of a fairseq encoder model (mixed in before its fairseq base class).

    A subclass sets ``QUERY_PREFIX`` (the state-dict prefix of its query encoder; the key encoder's is
    ``key_encoder.``), builds ``self.pooler`` (and, with separate towers, ``self.key_encoder`` and
    ``self.key_pooler``) and implements :meth:`query_encoder`, :meth:`features` and :meth:`head_parameters`.
    """

    QUERY_PREFIX = "encoder."

    @property
    def separate_towers(self) -> bool:
        return hasattr(self, "key_encoder")

    def query_encoder(self) -> nn.Module:
        raise NotImplementedError

    def features(self, encoder: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) final hidden states of ``encoder`` (a tower's)."""
        raise NotImplementedError

    def head_parameters(self) -> Iterable[nn.Parameter]:
        """The masked-LM head's own parameters (not the embeddings it may share): pair training leaves them
        as they are, so that no worker waits for gradients it never gets."""
        raise NotImplementedError

    def tower(self, name: str = "query") -> tuple[nn.Module, Pooler]:
        """(encoder, pooler) that embeds ``name`` ("query" or "key"; one tower unless --separate-towers)."""
        if name not in TOWERS:
            raise ValueError(f"tower must be one of {TOWERS}, got {name!r}")
        if name == "key" and self.separate_towers:
            return self.key_encoder, self.key_pooler
        return self.query_encoder(), self.pooler

    def embed(self, src_tokens: torch.Tensor, tower: str = "query") -> torch.Tensor:
        """The pooled embedding of each sequence by ``tower``'s encoder and pooler: (B, T) -> (B, D)."""
        encoder, pooler = self.tower(tower)
        return pooler(self.features(encoder, src_tokens), src_tokens.eq(encoder.padding_idx))

    def embed_pair(self, query_tokens=None, key_tokens=None):
        """(query embeddings (B, D) or None, key embeddings (B', D) or None), each by its tower."""
        return (None if query_tokens is None else self.embed(query_tokens, "query"),
                None if key_tokens is None else self.embed(key_tokens, "key"))

    def start_key_tower(self) -> None:
        """A freshly built model's towers start equal."""
        if self.separate_towers:
            self.key_encoder.load_state_dict(self.query_encoder().state_dict())
            self.key_pooler.load_state_dict(self.pooler.state_dict())

    def fill_towers(self, state_dict: dict, prefix: str) -> None:
        """Fill in what a checkpoint without this model's additions lacks (see the module's docstring)."""
        own = self.state_dict()
        # (fairseq's own encoders' upgrade may already have added a "key_encoder.version": weights decide)
        if self.separate_towers and not any(k.startswith(prefix + "key_encoder.") and k.endswith(".weight")
                                            for k in state_dict):
            for src, dst in ((self.QUERY_PREFIX, "key_encoder."), ("pooler.", "key_pooler.")):
                for k in [k for k in state_dict if k.startswith(prefix + src)]:
                    state_dict[prefix + dst + k[len(prefix + src):]] = state_dict[k].clone()
            logger.info("checkpoint has one tower: the key tower starts as a copy of it (--separate-towers)")
        added = [k for k in own if k.startswith(("pooler.dense.", "key_pooler.dense."))
                 and prefix + k not in state_dict]
        for k in added:
            state_dict[prefix + k] = own[k].clone()
        if added:
            logger.info(f"checkpoint has no pooler projection: {', '.join(added)} newly initialised (--pooler-dim)")
