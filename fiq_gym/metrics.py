"""Ranking and retrieval metrics shared by the environments, agents and benchmarks.

Conventions (the environments' docstrings repeat them):

* ``target_rank``: the target's 0-based position when the catalog is sorted by descending
  score. Ties count against the agent: every *other* item scoring at least as high as the
  target is placed before it. A constant scorer therefore earns the worst rank, N - 1,
  rather than a lucky 0.
* ``rank_percentile``: ``1 - rank / (N - 1)``, in [0, 1]; 1 means the target is first.
* ``recall_at_k``: the fraction of targets whose rank is below ``k``.
* ``cumulative_hits_at_k``: over a dialog, the fraction of targets that have been ranked
  below ``k`` at *any* turn so far (ChatIR's Hits@K: a target counts once it was found).
* ``best_log_rank_integral`` (BRI, after PlugIR): the area under each dialog's
  ``ln(1 + best rank so far)`` curve, per turn; lower is better, 0 when the target ranks
  first from the start.

The dialog metrics take ``ranks`` of shape ``(E, T + 1)``: row e holds dialog e's target rank
after each turn 0..T (turn 0 is the state before the agent acted). docs/benchmarks.md,
"Metrics", defines every metric with a worked example and compares them with the papers'.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "best_log_rank_integral",
    "best_log_rank_integral_per_dialog",
    "best_rank_so_far",
    "cumulative_hits_at_k",
    "rank_percentile",
    "recall_at_k",
    "target_rank",
]


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
    # two reductions, not two comparisons and a third pass (the env calls this every step);
    # a NaN rank is refused too (it lies in no range; the element-wise test let it through)
    if rank.size and not (rank.min() >= 0 and rank.max() <= num_items - 1):
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


def _dialog_ranks(ranks: np.ndarray) -> np.ndarray:
    """``ranks`` as a checked (E, T + 1) integer array, or a ``ValueError`` naming the fix."""
    array = np.asarray(ranks)
    if array.ndim != 2:
        raise ValueError(
            f"ranks must be 2-D, (dialogs, turns + 1), got shape {array.shape}; "
            "for one dialog pass ranks[None, :]"
        )
    if array.size == 0:
        raise ValueError(
            f"ranks of shape {array.shape} hold no dialog or no turn; pass at least one dialog "
            "with its turn-0 rank"
        )
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"ranks must be integer 0-based ranks, got dtype {array.dtype}; "
            "convert with np.asarray(ranks, dtype=np.int64)"
        )
    if array.min() < 0:
        e, t = np.argwhere(array < 0)[0]
        raise ValueError(
            f"ranks must be 0-based (>= 0), got {array[e, t]} for dialog {e} at turn {t}; "
            "a 1-based rank r is r - 1 here"
        )
    return array


def best_rank_so_far(ranks: np.ndarray) -> np.ndarray:
    """``b[e, t] = min(ranks[e, :t + 1])``: the best rank dialog e's target has had by turn t.

    Both dialog metrics below read this curve rather than the raw ranks: once the target has
    appeared near the top, the user could have picked it there, so a later, worse rank does
    not undo it (the convention of ChatIR and PlugIR).

    Args:
        ranks: (E, T + 1) non-negative integer ranks, turn 0 first.

    Returns:
        (E, T + 1) int64, non-increasing along each row.
    """
    return np.minimum.accumulate(_dialog_ranks(ranks).astype(np.int64), axis=1)


def cumulative_hits_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Cumulative Hits@k by turn (ChatIR): the share of dialogs whose target was ranked below
    ``k`` at *any* turn s <= t.

    Unlike R@k at turn t, which looks at turn t alone, a dialog counts from the first turn
    its target entered the top k, so the curve never falls; it is at least R@k at every turn.

    Args:
        ranks: (E, T + 1) non-negative integer 0-based ranks, turn 0 first.
        k: the cut-off, at least 1.

    Returns:
        (T + 1,) float64 fractions in [0, 1], non-decreasing in t.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer of at least 1, got {k!r}")
    return np.mean(best_rank_so_far(ranks) < k, axis=0)


def best_log_rank_integral_per_dialog(ranks: np.ndarray) -> np.ndarray:
    """Each dialog's best log-rank integral (BRI, after PlugIR, ACL 2024).

    With ``b_t`` the best rank so far (:func:`best_rank_so_far`), 0-based, the integral of
    ``ln(1 + b_t)`` over turns 0..T by the trapezoid rule, divided by T::

        BRI = (1 / T) * sum_{t=1..T} (ln(1 + b_{t-1}) + ln(1 + b_t)) / 2

    ``1 + b_t`` is the 1-based rank, so BRI is 0 exactly when the target ranks first from
    turn 0 on, and at most ``ln N`` for N items. The log weighs moving a target from rank 1,000
    to 100 like moving it from 10 to 1, and the integral rewards finding it early, which
    the last turn's R@k does not. With T = 0 (only turn 0) it is ``ln(1 + b_0)``.

    Args:
        ranks: (E, T + 1) non-negative integer 0-based ranks, turn 0 first.

    Returns:
        (E,) float64, lower is better.
    """
    logs = np.log1p(best_rank_so_far(ranks).astype(np.float64))
    turns = logs.shape[1] - 1
    if turns == 0:
        return logs[:, 0]
    return (logs[:, :-1] + logs[:, 1:]).sum(axis=1) / (2 * turns)


def best_log_rank_integral(ranks: np.ndarray) -> float:
    """The mean BRI over dialogs (:func:`best_log_rank_integral_per_dialog`); lower is better.

    Args:
        ranks: (E, T + 1) non-negative integer 0-based ranks, turn 0 first.
    """
    return float(np.mean(best_log_rank_integral_per_dialog(ranks)))
