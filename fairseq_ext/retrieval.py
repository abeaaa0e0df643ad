"""Retrieval measured honestly: every query ranked against every key of the pool.

Pair ``i``'s query should find key ``i``. The rank of the right key is one plus the number of
keys that score strictly higher plus half the other keys that score the same: the mean rank under a
random order of ties, so a scorer that gives many keys the same score (BM25 with no word in common:
all zero) is not ranked first by luck, and two identical keys share the places they tie for.
MRR is the mean of 1/rank, Recall@k the share of queries whose key ranks k or better. Scores are
computed a block of queries at a time, so a pool of N pairs needs O(block * N) memory, not O(N^2).
"""

from __future__ import annotations

import torch

DEFAULT_KS = (1, 10)


def ranks_of_right_keys(query_emb: torch.Tensor, key_emb: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """(N, D) queries, (N, D) keys -> (N,) rank (1 = first; ties: see above) of key i among all keys for
    query i, by dot product (normalise the embeddings first for cosine)."""
    if query_emb.shape != key_emb.shape or query_emb.dim() != 2:
        raise ValueError(f"queries {tuple(query_emb.shape)} and keys {tuple(key_emb.shape)} must both be (N, D)")
    q, k = query_emb.float(), key_emb.float()
    ranks = torch.empty(q.size(0), dtype=torch.float64)
    for start in range(0, q.size(0), block):
        ranks[start:start + block] = ranks_in_scores(q[start:start + block] @ k.T, start)
    return ranks


def ranks_in_scores(scores: torch.Tensor, first: int = 0) -> torch.Tensor:
    """(b, N) scores of queries first..first+b-1 against all N keys -> (b,) rank of each one's right key."""
    rows = torch.arange(scores.size(0))
    right = scores[rows, rows + first][:, None]  # (b, 1)
    greater = (scores > right).sum(1)
    ties = (scores == right).sum(1) - 1  # without the right key itself
    return (1.0 + greater.double() + 0.5 * ties.double()).cpu()


def metrics_from_ranks(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """{"mrr": ..., "recall@1": ..., "recall@10": ...} (fractions in [0, 1]) of ranks (N,)."""
    ranks = ranks.double()
    out = {"mrr": float((1.0 / ranks).mean()) if ranks.numel() else 0.0}
    for k in ks:
        out[f"recall@{k}"] = float((ranks <= k).double().mean()) if ranks.numel() else 0.0
    return out


def retrieval_metrics(query_emb: torch.Tensor, key_emb: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    """MRR and Recall@k of a pool: query i's right key is key i, ranked against all N keys."""
    return metrics_from_ranks(ranks_of_right_keys(query_emb, key_emb), ks)


def chance_metrics(n: int, ks=DEFAULT_KS) -> dict[str, float]:
    """What a random ranking of n keys scores on average: MRR = H(n)/n, Recall@k = k/n."""
    out = {"mrr": sum(1.0 / r for r in range(1, n + 1)) / n if n else 0.0}
    for k in ks:
        out[f"recall@{k}"] = min(k, n) / n if n else 0.0
    return out
