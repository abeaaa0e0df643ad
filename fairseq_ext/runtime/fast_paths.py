"""Two training-step fast paths in fairseq's modules (entries of :data:`fairseq_ext.runtime.patches.PATCHES`).

* :func:`lm_head_taking_positions`: fairseq's ``RobertaLMHead`` (the head of ``roberta`` and ``hf_bert``)
  selects the masked positions with a boolean mask, ``features[masked_tokens]``: on CUDA that is a
  ``nonzero`` whose size the host must read, so every masked-LM step waits there for the GPU to finish
  the encoder. The replacement also takes the flat positions (a LongTensor, made by the data loader on
  the host: :meth:`fairseq_ext.data.masked_lm_dataset.HFMaskedLMDataset.collater`) and gathers them with
  ``index_select``, which never waits. A boolean mask (or None) is handled exactly as before.
* :func:`fused_encoder_decoder_attention`: fairseq's ``MultiheadAttention`` takes torch's fused
  ``F.multi_head_attention_forward`` (scaled-dot-product attention inside) only when ``static_kv`` is
  false, so the cross-attention of BART's decoder always ran the unfused path (bmm, softmax, dropout,
  bmm). ``static_kv`` only matters with an incremental state (generation: keys and values are cached);
  without one both paths compute the same attention, so the replacement clears it there (not where a
  caller wants the scores before softmax or per head, which only the unfused path returns).
"""

from __future__ import annotations

import functools

import torch


def lm_head_taking_positions(current):
    """``RobertaLMHead.forward`` that also accepts ``masked_tokens`` as flat positions into (B*T)."""

    @functools.wraps(current)
    def forward(self, features, masked_tokens=None, **kwargs):
        if masked_tokens is not None and masked_tokens.dtype != torch.bool:
            features, masked_tokens = gather_positions(features, masked_tokens), None
        return current(self, features, masked_tokens, **kwargs)

    return forward


def gather_positions(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The rows of ``features`` (B, T, C) at flat ``positions`` (N,) into B*T: (N, C), in the order given.

    Row-major positions select what ``features[mask]`` selects for the mask they come from, without
    the host reading how many there are.

    >>> gather_positions(torch.arange(12.0).view(2, 3, 2), torch.tensor([1, 3])).tolist()
    [[2.0, 3.0], [6.0, 7.0]]
    """
    return features.reshape(-1, features.size(-1)).index_select(0, positions)


def fused_encoder_decoder_attention(current):
    """``MultiheadAttention.forward`` that leaves ``static_kv`` out where there is no incremental state."""

    @functools.wraps(current)
    def forward(self, query, key, value, key_padding_mask=None, incremental_state=None, need_weights=True,
                static_kv=False, attn_mask=None, before_softmax=False, need_head_weights=False):
        if incremental_state is None and not before_softmax and not need_head_weights:
            static_kv = False  # only read beside an incremental state; True bars the fused path
        return current(self, query, key, value, key_padding_mask, incremental_state, need_weights, static_kv,
                       attn_mask, before_softmax, need_head_weights)

    return forward
