"""info_nce: the loss against a plain computation, and two CPU workers (gloo) against one worker on the
union of their batches: the same summed loss and the same gradients, for every option that changes what
is gathered (symmetric, queue, learned temperature, dot product), with batches of unequal size, and with
gradient caching under DistributedDataParallel (chunks replayed in the backward, all-reduced once)."""

from __future__ import annotations

import math
import os
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fairseq_ext.criterions.info_nce import InfoNCECriterion
from fairseq_ext.errors import UserError
from support.gloo import free_port

DIM, FEATURES = 8, 6
SIZES = (3, 5)  # pairs of worker 0 and worker 1: unequal, as batches by token budget are
VOCAB, PAD = 20, 1
TASK = types.SimpleNamespace(target_dictionary=types.SimpleNamespace(pad=lambda: PAD))


class Towers(torch.nn.Module):
    """Two small 'towers' so that gradients reach separate query and key weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.q = torch.nn.Linear(FEATURES, DIM)
        self.k = torch.nn.Linear(FEATURES, DIM)

    def forward(self, xq, xk):
        return torch.tanh(self.q(xq)), torch.tanh(self.k(xk))


class TokenTowers(torch.nn.Module):
    """Query and key towers over right-padded token ids (mean of the non-pad embeddings), as the criterion
    calls a model: ``model(query_tokens=, key_tokens=)``; ``calls`` records whether autograd was on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, FEATURES)
        self.q = torch.nn.Linear(FEATURES, DIM)
        self.k = torch.nn.Linear(FEATURES, DIM)
        self.calls = []

    def pool(self, tokens):
        mask = tokens.ne(PAD).unsqueeze(-1).float()  # (B, T, 1)
        return (self.embed(tokens) * mask).sum(1) / mask.sum(1)  # (B, FEATURES)

    def forward(self, query_tokens, key_tokens):
        self.calls.append(torch.is_grad_enabled())
        return torch.tanh(self.q(self.pool(query_tokens))), torch.tanh(self.k(self.pool(key_tokens)))


def token_batches(steps: int = 2):
    """(queries, keys) of sum(SIZES) rows each, right-padded ids of 1 to 7 tokens."""
    g = torch.Generator().manual_seed(2)
    n = sum(SIZES)

    def side():
        ids = torch.randint(PAD + 1, VOCAB, (n, 7), generator=g)
        lengths = torch.randint(1, 8, (n, 1), generator=g)
        return ids.masked_fill(torch.arange(7) >= lengths, PAD)

    return [(side(), side()) for _ in range(steps)]


def batches(steps: int = 2):
    g = torch.Generator().manual_seed(1)
    n = sum(SIZES)
    return [(torch.randn(n, FEATURES, generator=g), torch.randn(n, FEATURES, generator=g)) for _ in range(steps)]


def rows(rank: int, world: int) -> tuple[int, int]:
    """The rows of every batch this worker takes: its share of SIZES, or all of them alone."""
    if world == 1:
        return 0, sum(SIZES)
    lo = sum(SIZES[:rank])
    return lo, lo + SIZES[rank]


def run(options: dict, rank: int = 0, world: int = 1) -> list[dict]:
    """Train-mode steps on this worker's rows; per step: the loss summed over workers and every gradient
    summed over workers (what DDP's average times fairseq's workers / sample size amounts to)."""
    towers = Towers()
    criterion = InfoNCECriterion(None, **options)
    criterion.train()
    lo, hi = rows(rank, world)
    out = []
    for xq, xk in batches():
        towers.zero_grad()
        criterion.zero_grad()
        q, k = towers(xq[lo:hi], xk[lo:hi])
        loss, n_correct, candidates = criterion.contrastive_loss(q, k)
        loss.backward()
        named = dict(towers.named_parameters()) | dict(criterion.named_parameters())
        grads = {name: p.grad.clone() for name, p in named.items()}
        total = loss.detach().clone()
        if world > 1:
            for g in (*grads.values(), total):
                dist.all_reduce(g)
        out.append({"loss": total, "grads": grads, "candidates": candidates})
    return out


def run_forward(options: dict, rank: int = 0, world: int = 1) -> list[dict]:
    """As :func:`run`, through the criterion's forward on token ids (gradient caching when ``options`` ask),
    the towers wrapped in DistributedDataParallel when distributed; per step also the towers' calls."""
    towers = TokenTowers()
    model = torch.nn.parallel.DistributedDataParallel(towers) if world > 1 else towers
    criterion = InfoNCECriterion(TASK, **options)
    criterion.train()
    lo, hi = rows(rank, world)
    out = []
    for queries, keys in token_batches():
        towers.zero_grad()
        criterion.zero_grad()
        towers.calls.clear()
        sample = {"net_input": {"query_tokens": queries[lo:hi], "key_tokens": keys[lo:hi]}, "nsentences": hi - lo,
                  "ntokens": int(queries[lo:hi].ne(PAD).sum() + keys[lo:hi].ne(PAD).sum())}
        loss, n, log = criterion(model, sample)
        loss.backward()
        grads = {f"towers.{name}": p.grad * world for name, p in towers.named_parameters()}  # DDP averaged them
        grads |= {name: p.grad.clone() for name, p in criterion.named_parameters()}
        total = loss.detach().clone()
        if world > 1:
            for g in (total, *(grads[name] for name, _ in criterion.named_parameters())):
                dist.all_reduce(g)
        out.append({"loss": total, "grads": grads, "candidates": log["candidates"] // n, "calls": list(towers.calls)})
    return out


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, options in OPTIONS.items():
            steps = run(options, rank, world)
            if rank == 0:
                results[name] = steps
        steps = run_forward(CACHED, rank, world)
        if rank == 0:
            results["cached"] = steps
    finally:
        dist.destroy_process_group()


OPTIONS = {
    "cosine": {},
    "dot, symmetric": {"similarity": "dot", "symmetric": True, "temperature": 0.5},
    "queue, learned temperature": {"queue_size": 6, "learn_temperature": True},
}
CACHED = {"grad_cache_chunk": 2, "symmetric": True, "queue_size": 6, "learn_temperature": True}


@pytest.fixture(scope="module")
def two_workers() -> dict:
    """Every option's steps on two spawned workers (one process group for all: spawning costs seconds)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, free_port(), results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_two_workers_equal_one_worker_on_the_union_batch(name, two_workers):
    one, two = run(OPTIONS[name]), two_workers[name]
    for step, (a, b) in enumerate(zip(one, two)):
        assert a["candidates"] == b["candidates"], step  # every worker's keys (and the queue) are candidates
        assert torch.allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6), (step, a["loss"], b["loss"])
        assert a["grads"].keys() == b["grads"].keys()
        for key in a["grads"]:
            assert a["grads"][key].abs().sum() > 0, key
            assert torch.allclose(a["grads"][key], b["grads"][key], rtol=1e-4, atol=1e-6), (step, key)


def test_two_workers_caching_gradients_under_ddp_equal_one_worker_on_the_union_batch(two_workers):
    """Worker 0 caches 3 pairs in chunks of 2 and 1, worker 1 5 pairs in 2, 2, 1: each replays its chunks in
    the backward (all but the last under no_sync) and the sum equals one uncached worker on all 8 pairs."""
    one = run_forward({**CACHED, "grad_cache_chunk": 0})
    two = two_workers["cached"]
    for step, (a, b) in enumerate(zip(one, two)):
        assert a["calls"] == [True] and b["calls"] == [False, False, True, True], step  # rank 0: 2 chunks
        assert a["candidates"] == b["candidates"], step
        assert torch.allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6), (step, a["loss"], b["loss"])
        assert a["grads"].keys() == b["grads"].keys() and "logit_scale" in a["grads"]
        for key in a["grads"]:
            assert a["grads"][key].abs().sum() > 0, key
            assert torch.allclose(a["grads"][key], b["grads"][key], rtol=1e-4, atol=1e-6), (step, key)


def test_loss_is_cross_entropy_over_in_batch_negatives_and_the_queue():
    torch.manual_seed(3)
    q, k = torch.randn(4, DIM), torch.randn(4, DIM)
    criterion = InfoNCECriterion(None, temperature=0.1, queue_size=3)
    criterion.train()
    loss, n_correct, candidates = criterion.contrastive_loss(q, k)
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = qn @ kn.T / 0.1
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(4), reduction="sum"))
    assert candidates == 4 and int(n_correct) == int((logits.argmax(1) == torch.arange(4)).sum())
    assert torch.equal(criterion.queue, kn[:3])  # the newest keys, up to --queue-size
    q2, k2 = torch.randn(2, DIM), torch.randn(2, DIM)
    loss2, _, candidates2 = criterion.contrastive_loss(q2, k2)
    negatives = torch.cat([F.normalize(k2, dim=-1), kn[:3]])
    expected = F.cross_entropy(F.normalize(q2, dim=-1) @ negatives.T / 0.1, torch.arange(2), reduction="sum")
    assert candidates2 == 5 and torch.allclose(loss2, expected)
    criterion.eval()  # validation neither uses nor fills the queue
    _, _, candidates3 = criterion.contrastive_loss(q2, k2)
    assert candidates3 == 2 and criterion.queue.size(0) == 3


def test_symmetric_averages_both_directions_and_learned_temperature_starts_where_asked():
    torch.manual_seed(4)
    q, k = torch.randn(5, DIM), torch.randn(5, DIM)
    criterion = InfoNCECriterion(None, temperature=0.2, similarity="dot", symmetric=True, learn_temperature=True)
    loss, _, _ = criterion.contrastive_loss(q, k)
    labels = torch.arange(5)
    expected = (F.cross_entropy(q @ k.T / 0.2, labels, reduction="sum")
                + F.cross_entropy(k @ q.T / 0.2, labels, reduction="sum")) / 2
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert math.isclose(criterion.current_temperature(), 0.2, rel_tol=1e-6)
    loss.backward()
    assert criterion.logit_scale.grad is not None and criterion.logit_scale.grad != 0
    with torch.no_grad():  # never below 0.01, as CLIP
        criterion.logit_scale.fill_(10.0)
    assert math.isclose(criterion.current_temperature(), 0.01, rel_tol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0.0}, r"^--temperature \(criterion.temperature\) must be positive, got 0.0$"),
    ({"queue_size": -1}, r"^--queue-size \(criterion.queue_size\) must be 0 \(none\) or positive, got -1$"),
])
def test_bad_settings_are_one_line(options, message):
    with pytest.raises(UserError, match=message):
        InfoNCECriterion(None, **options)
