"""Training-step fast paths in fairseq's modules (entries of :data:`fairseq_ext.runtime.patches.PATCHES`).

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
  caller wants the scores before softmax or per head, which only the unfused path returns: fairseq's decoder
  asks that of its last layer, the alignment layer, whose cross-attention so stays unfused).
* :func:`multi_tensor_adam_step`: fairseq's own Adam (``--optimizer adam`` without apex) over lists of tensors
  instead of one tensor at a time, the same arithmetic.
"""

from __future__ import annotations

import functools
import math

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


FOREACH_ELEMENTS = 2**25  # parameters updated together: their square roots are a temporary (128 MB in fp32)


def multi_tensor_adam_step(current):
    """``fairseq.optim.adam.Adam.step`` with each group's update done by ``torch._foreach_*`` ops.

    fairseq's Adam (what ``--optimizer adam`` runs where apex's fused Adam is not installed, i.e. on CPU and
    on most GPU machines today) updates one parameter at a time: about ten small ops per tensor, each a
    kernel launch on a GPU. The same arithmetic over lists of tensors gives the same numbers (bit for bit
    on a CPU, where the foreach ops run the same kernels tensor by tensor), with the Python loop gone. Groups
    holding anything else than float32 dense tensors (``--memory-efficient-fp16``, sparse gradients) or
    using ``amsgrad`` take fairseq's loop as before.
    """

    @functools.wraps(current)
    def step(self, closure=None):
        if not all(_foreach_ready(group) for group in self.param_groups):
            return current(self, closure)
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                _adam_group_step(self.state, group, params)
        return loss

    return step


def _foreach_ready(group: dict) -> bool:
    return not group.get("amsgrad", False) and all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 and not p.grad.is_sparse
        for p in group["params"] if p.grad is not None)


def _adam_group_step(state: dict, group: dict, params: list) -> None:
    """fairseq's Adam update (its decoupled weight decay, eps added to sqrt(v) before the bias correction),
    over chunks of at most :data:`FOREACH_ELEMENTS` (the square roots are a temporary copy of a chunk's
    second moments; fairseq's loop held one tensor's)."""
    chunk, size = [], 0
    for p in params:
        if chunk and size + p.numel() > FOREACH_ELEMENTS:
            _adam_update(state, group, chunk)
            chunk, size = [], 0
        chunk.append(p)
        size += p.numel()
    _adam_update(state, group, chunk)


def _adam_update(state: dict, group: dict, params: list) -> None:
    beta1, beta2 = group["betas"]
    lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
    states = [state[p] for p in params]
    for p, st in zip(params, states):
        if len(st) == 0:
            st["step"] = 0
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p.data), torch.zeros_like(p.data)
        else:  # as fairseq: moments loaded from a checkpoint follow the parameter's device and dtype
            st["exp_avg"], st["exp_avg_sq"] = st["exp_avg"].to(p.data), st["exp_avg_sq"].to(p.data)
        st["step"] += 1
    data, grads = [p.data for p in params], [p.grad.data for p in params]
    exp_avgs, exp_avg_sqs = [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states]
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, eps)
    if decay != 0:
        torch._foreach_add_(data, data, alpha=-decay * lr)
    steps = [-(lr * math.sqrt(1 - beta2 ** st["step"]) / (1 - beta1 ** st["step"])) for st in states]
    torch._foreach_addcdiv_(data, exp_avgs, denoms, steps)
