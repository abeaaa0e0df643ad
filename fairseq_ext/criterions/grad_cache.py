"""Gradient caching inside the loss (GradCache, Gao et al. 2021; sentence-transformers'
``CachedMultipleNegativesRankingLoss``): the loss of a batch of thousands of pairs, with every pair a
negative for every other, at the activation memory of ``chunk`` pairs.

:func:`cached_embeddings` embeds the batch ``chunk`` pairs at a time without autograd, keeping each
chunk's random state (:class:`RandomState`), and hands the loss the embeddings as one leaf tensor that
requires grad. The loss is computed on it as on ordinary embeddings; the criterion returns it to
fairseq, whose own ``train_step`` calls ``optimizer.backward(loss)``. When that backward reaches the
leaf, :func:`_backward_hook` gets the gradient of the (scaled) loss with respect to every embedding and
replays each chunk with autograd, drawing the same dropout masks, under the autocast of the first pass,
and back-propagates that chunk's part of the gradient. Loss and gradients equal the uncached
computation's (``tests/tasks/test_code_contrastive.py``).

The hook sits on the embeddings rather than, as in sentence-transformers, on a loss detached after an
eager backward inside ``forward``: the gradient it receives already carries whatever the caller
multiplied the loss by (fairseq's fp16 loss scale, ``loss *= 0`` for a dummy batch), so nothing is
rescaled by hand and fp16 gradients are as safe from underflow as uncached ones; the rest of the loss
graph (the learned temperature, the cross-worker gather) is differentiated once, in the same pass.

Under DistributedDataParallel (the model the criterion receives is fairseq's wrapper) every chunk but
the last is replayed under ``no_sync``: gradients are all-reduced once, after the last chunk.
"""

from __future__ import annotations

import contextlib
import functools

import torch


class RandomState:
    """The random state a forward pass is about to draw from: the CPU's and that of every CUDA device
    of ``tensors`` (its inputs). :meth:`replay` draws it again inside ``torch.random.fork_rng``, so the
    state outside is left as it was."""

    def __init__(self, *tensors: torch.Tensor):
        self.cpu = torch.get_rng_state()
        self.devices = sorted({t.device.index if t.device.index is not None else torch.cuda.current_device()
                               for t in tensors if t.is_cuda})
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


def trim(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop the columns that are padding in every row of a chunk (B, T) -> (B, T')."""
    used = tokens.ne(pad).any(0).nonzero()
    return tokens[:, : int(used.max()) + 1] if used.numel() else tokens


def _autocast_as_now():
    """A context that enters the autocast the first pass runs under (fairseq's ``--amp``: CUDA autocast);
    the replay runs in the backward pass, outside fairseq's ``autocast`` block."""
    if not torch.is_autocast_enabled():  # without an argument: CUDA's, in every torch release
        return contextlib.nullcontext
    dtype = torch.get_autocast_dtype("cuda") if hasattr(torch, "get_autocast_dtype") else torch.get_autocast_gpu_dtype()
    return functools.partial(torch.autocast, "cuda", dtype=dtype)


def cached_embeddings(model, queries: torch.Tensor, keys: torch.Tensor, chunk: int,
                      pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D) query and key embeddings of ``model(query_tokens=, key_tokens=)``, computed ``chunk`` pairs at
    a time without autograd; back-propagating through them replays the chunks (see the module's docstring)."""
    pieces = [(trim(queries[i:i + chunk], pad), trim(keys[i:i + chunk], pad)) for i in range(0, queries.size(0), chunk)]
    states, q_parts, k_parts = [], [], []
    with torch.no_grad():
        for q_tokens, k_tokens in pieces:
            states.append(RandomState(q_tokens, k_tokens))
            q, k = model(query_tokens=q_tokens, key_tokens=k_tokens)
            q_parts.append(q)
            k_parts.append(k)
    both = torch.stack([torch.cat(q_parts), torch.cat(k_parts)]).requires_grad_()  # (2, B, D), a leaf
    both.register_hook(functools.partial(_backward_hook, model=model, pieces=pieces, states=states,
                                         autocast=_autocast_as_now()))
    return both[0], both[1]


def _backward_hook(grad: torch.Tensor, model, pieces, states, autocast) -> None:
    """grad: (2, B, D), d(loss as back-propagated) / d(query and key embeddings). Each chunk is embedded
    again with autograd and back-propagated with its rows of ``grad``; DDP synchronises on the last."""
    start = 0
    with torch.enable_grad():
        for i, ((q_tokens, k_tokens), state) in enumerate(zip(pieces, states)):
            n = q_tokens.size(0)
            last = i == len(pieces) - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with state.replay(), autocast():
                    q, k = model(query_tokens=q_tokens, key_tokens=k_tokens)
                torch.autograd.backward([q, k], [grad[0, start:start + n], grad[1, start:start + n]])
            start += n
