"""How the environments rank the gallery: one home for the target's rank and for the item a
``query`` action shows.

A *ranker* answers two questions for B dialogs at once:

* :meth:`Ranker.similar_ranks`: the target's rank among all items by similarity to the shown
  item (``index`` and ``shortlist`` mode, and every reset);
* :meth:`Ranker.query_ranks`: for B query vectors, the best item not shown yet in each
  dialog and the target's rank under the query's scores (``query`` mode).

(``scores`` mode needs no ranker: the agent's scores are the scores.) Ranks follow
:func:`fiq_gym.metrics.target_rank`: the number of other items scoring at least as well as
the target, ties against the agent.

Scorings, the environments' ``scoring=`` argument (:data:`SCORINGS`):

* ``"float32"`` (default): numpy float32 products, exactly as every earlier release ranked.
* ``"exact"``: comparisons of exact dot products (:mod:`fiq_gym.ranking.exact`): a float32
  scan, then a recheck of the few items within a proven error band around the target. Ranks
  do not depend on how the gallery is split or batched, which sharding needs. They differ from
  ``"float32"`` only where BLAS rounding decides a near-tie (scores within about 1e-6).
* ``"float16"``: the same exact ranks, scanning a float16 copy of the features (half the
  memory per shard) with a wider band.

Sharding (``shards=S`` with an exact scoring; in processes, inline or in Ray actors) is in
:mod:`fiq_gym.ranking.sharded`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fiq_gym.metrics import target_rank
from fiq_gym.ranking.exact import SHARD_MODES

__all__ = ["SCORINGS", "SHARD_MODES", "DenseRanker", "Ranker", "best_unseen", "make_ranker"]

SCORINGS = ("float32", "exact", "float16")


class Ranker(Protocol):
    """What the dialog engine asks of a ranker (see the module docstring)."""

    def similar_ranks(self, shown: np.ndarray, targets: np.ndarray) -> np.ndarray: ...

    def query_ranks(
        self, queries: np.ndarray, targets: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def best_unseen(scores: np.ndarray, history: np.ndarray) -> np.ndarray:
    """The environment's rule for ``query`` and ``scores`` actions: each dialog shows its
    highest-scoring item not shown yet (ties: the lowest index).

    Args:
        scores: (B, N) scores.
        history: (B, T + 1) items shown so far, -1 where none.
    """
    masked = np.array(scores, dtype=np.float64)
    seen = history >= 0
    masked[np.nonzero(seen)[0], history[seen]] = -np.inf
    return np.argmax(masked, axis=1)


class DenseRanker:
    """The default ``"float32"`` scoring: one numpy product of the queries with every item."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = features

    def similar_ranks(self, shown: np.ndarray, targets: np.ndarray) -> np.ndarray:
        f = self.features
        return target_rank(f[shown] @ f.T, targets)

    def query_ranks(
        self, queries: np.ndarray, targets: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.features.T
        return best_unseen(scores, history), target_rank(scores, targets)

    def close(self) -> None:
        pass


def make_ranker(
    features: np.ndarray, scoring: str = "float32", shards: int | None = None, shard_mode: str = "process"
) -> Ranker:
    """The ranker for ``scoring`` over ``features`` ((N, D) float32, the items in play),
    split over ``shards`` shards (None: not sharded) computed in worker processes
    (``shard_mode="process"``), one after another in this process (``"inline"``) or in Ray
    actors (``"ray"``, which needs Ray)."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {list(SCORINGS)}, got {scoring!r}")
    if shard_mode not in SHARD_MODES:
        raise ValueError(f"shard_mode must be one of {list(SHARD_MODES)}, got {shard_mode!r}")
    if shards is not None and (
        isinstance(shards, bool) or not isinstance(shards, int | np.integer) or shards < 1
    ):
        raise ValueError(f"shards must be a positive integer or None, got {shards!r}")
    if shards is not None and shards > len(features):
        raise ValueError(
            f"shards={shards} is more than the {len(features)} items in play; pass at most {len(features)}"
        )
    if scoring == "float32":
        if shards is not None:
            raise ValueError(
                f"shards={shards} needs scoring='exact' (or 'float16'): the default 'float32' ranks are numpy's "
                "BLAS products, whose last bits change with the shape of the product, so counts over shards would "
                "not add up to the unsharded ranks; pass scoring='exact' as well"
            )
        return DenseRanker(features)
    from fiq_gym.ranking.sharded import ExactRanker

    return ExactRanker(
        features,
        scan="float16" if scoring == "float16" else "float32",
        shards=1 if shards is None else int(shards),
        mode="inline" if shards is None else shard_mode,
    )
