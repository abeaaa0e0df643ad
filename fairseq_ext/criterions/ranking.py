"""Retrieval measured honestly: every query ranked against every key of the pool.

Pair ``i``'s query should find key ``i``. For each query, ``greater`` counts the keys that score
strictly higher than the right one and ``ties`` the other keys that score exactly the same. Ties are
broken at random, in expectation: the right key is equally likely to be at any of the ``ties + 1``
places from ``greater + 1``, so MRR and Recall@k are the expected values over that order (a scorer that
gives many keys the same score, as BM25 gives 0 to every key without a word of the query, is not ranked
first by luck; two identical keys share the places they tie for). Scores are computed a block of
queries at a time: a pool of N pairs needs O(block * N) memory, not O(N^2).
"""

from __future__ import annotations

import torch

DEFAULT_KS = (1, 10)
RETRIEVAL_KEYS = ("mrr", *(f"recall@{k}" for k in DEFAULT_KS))  # the figures of metrics_from_counts: validation logs


def rank_counts(scores: torch.Tensor, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, N) scores of queries ``first .. first+b-1`` against all N keys -> (greater, ties), (b,) each."""
    rows = torch.arange(scores.size(0), device=scores.device)
    right = scores[rows, rows + first][:, None]  # (b, 1)
    greater = (scores > right).sum(1)
    ties = (scores == right).sum(1) - 1  # without the right key itself
    return greater.cpu(), ties.cpu()


def embedding_rank_counts(query_emb: torch.Tensor, key_emb: torch.Tensor, block: int = 1024):
    """(N, D) queries, (N, D) keys -> (greater, ties) of every query, scored by dot product (normalise the
    embeddings first for cosine)."""
    if query_emb.shape != key_emb.shape or query_emb.dim() != 2:
        raise ValueError(f"queries {tuple(query_emb.shape)} and keys {tuple(key_emb.shape)} must both be (N, D)")
    q, k = query_emb.float(), key_emb.float()
    parts = [rank_counts(q[s:s + block] @ k.T, s) for s in range(0, q.size(0), block)]
    if not parts:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat([g for g, _ in parts]), torch.cat([t for _, t in parts])


def metrics_from_counts(greater: torch.Tensor, ties: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """{"mrr", "recall@1", "recall@10"} (``RETRIEVAL_KEYS`` with the default ``ks``; fractions in [0, 1],
    expected over a random order of ties)."""
    g, t = greater.double(), ties.double()
    if g.numel() == 0:
        return {"mrr": 0.0, **{f"recall@{k}": 0.0 for k in ks}}
    # E[1/rank], rank uniform on g+1 .. g+t+1: (H(g+t+1) - H(g)) / (t+1), H(n) = digamma(n+1) + Euler's gamma
    reciprocal = (torch.special.digamma(g + t + 2) - torch.special.digamma(g + 1)) / (t + 1)
    out = {"mrr": float(reciprocal.mean())}
    for k in ks:
        out[f"recall@{k}"] = float(((k - g) / (t + 1)).clamp(0, 1).mean())
    return out


def retrieval_metrics(query_emb: torch.Tensor, key_emb: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """MRR and Recall@k of a pool: query i's right key is key i, ranked against all N keys."""
    return metrics_from_counts(*embedding_rank_counts(query_emb, key_emb), ks)


def chance_metrics(n: int, ks=DEFAULT_KS) -> dict[str, float]:
    """What a random ranking of n keys scores: MRR = H(n)/n, Recall@k = k/n."""
    if n < 1:
        return {"mrr": 0.0, **{f"recall@{k}": 0.0 for k in ks}}
    return {"mrr": sum(1.0 / r for r in range(1, n + 1)) / n, **{f"recall@{k}": min(k, n) / n for k in ks}}
