"""Ranking and retrieval metrics shared by the environments, agents and benchmarks.

Conventions (the environments' docstrings repeat them):

* ``target_rank``: the target's 0-based position when the catalog is sorted by descending
  score. Ties count against the agent: every *other* item scoring at least as high as the
  target is placed before it. A constant scorer therefore earns the worst rank, N - 1,
  rather than a lucky 0.
* ``rank_percentile``: ``1 - rank / (N - 1)``, in [0, 1]; 1 means the target is first.
* ``recall_at_k``: the fraction of targets whose rank is below ``k``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_percentile", "recall_at_k", "target_rank"]


def target_rank(scores: np.ndarray, targets: np.ndarray | int) -> np.ndarray:
    """0-based rank of each row's target under descending ``scores`` (ties pessimistic).

    Args:
        scores: (B, N) or (N,) float scores, higher is better. NaN is rejected.
        targets: (B,) or scalar indices into the last axis.

    Returns:
        (B,) int64 ranks (or a 0-d array for 1-D input).
    """
    scores = np.asarray(scores)
    single = scores.ndim == 1
    scores2 = scores[None, :] if single else scores
    if scores2.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(t) != scores2.shape[0]:
        raise ValueError(f"got {len(t)} targets for {scores2.shape[0]} score rows")
    n = scores2.shape[1]
    if np.any((t < 0) | (t >= n)):
        raise ValueError(f"targets must lie in [0, {n}), got {t[(t < 0) | (t >= n)][:5].tolist()}")
    if np.isnan(scores2).any():
        raise ValueError("scores contain NaN; rank is undefined")
    target_scores = scores2[np.arange(len(t)), t][:, None]
    # ">=" counts the target itself once; subtract it.
    ranks = np.count_nonzero(scores2 >= target_scores, axis=1).astype(np.int64) - 1
    return ranks[0] if single else ranks


def rank_percentile(rank: np.ndarray | int, num_items: int) -> np.ndarray:
    """``1 - rank / (num_items - 1)``; a one-item catalog has percentile 1."""
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}")
    rank = np.asarray(rank, dtype=np.float64)
    if np.any((rank < 0) | (rank > num_items - 1)):
        raise ValueError(f"ranks must lie in [0, {num_items - 1}]")
    if num_items == 1:
        return np.ones_like(rank)
    return 1.0 - rank / (num_items - 1)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of ranks strictly below ``k`` (R@k)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("recall_at_k of no ranks is undefined")
    return float(np.mean(ranks < k))
