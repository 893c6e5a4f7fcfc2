"""Ranking maths: property tests against a brute-force definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fiq_gym.metrics import rank_percentile, recall_at_k, target_rank

scores_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(1, 40)),
    # Few distinct values, so ties are common.
    elements=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
)


@given(scores_rows, st.data())
def test_rank_matches_brute_force_pessimistic_ties(scores, data):
    b, n = scores.shape
    targets = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b)))
    ranks = target_rank(scores, targets)
    for row, t, r in zip(scores, targets, ranks, strict=True):
        better_or_tied = sum(1 for j in range(n) if j != t and row[j] >= row[t])
        assert r == better_or_tied
        assert 0 <= r <= n - 1


@given(hnp.arrays(np.float64, st.integers(2, 50), elements=st.floats(-1e6, 1e6)), st.data())
def test_rank_zero_iff_target_is_unique_best(scores, data):
    t = data.draw(st.integers(0, len(scores) - 1))
    rank = int(target_rank(scores, t))
    unique_best = all(scores[t] > s for j, s in enumerate(scores) if j != t)
    assert (rank == 0) == unique_best


def test_constant_scores_give_worst_rank():
    assert int(target_rank(np.zeros(10), 3)) == 9


@given(st.integers(1, 1000), st.data())
def test_percentile_in_unit_interval_and_monotone(n, data):
    r1 = data.draw(st.integers(0, n - 1))
    r2 = data.draw(st.integers(0, n - 1))
    p1, p2 = float(rank_percentile(r1, n)), float(rank_percentile(r2, n))
    assert 0.0 <= p1 <= 1.0
    assert (r1 <= r2) == (p1 >= p2) or p1 == p2
    assert float(rank_percentile(0, n)) == 1.0
    if n > 1:
        assert float(rank_percentile(n - 1, n)) == 0.0


@given(hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(0, 100)), st.integers(1, 120))
def test_recall_at_k_counts_ranks_below_k(ranks, k):
    assert recall_at_k(ranks, k) == pytest.approx(np.mean([r < k for r in ranks]))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        target_rank(np.zeros((1, 3)), [3])
    with pytest.raises(ValueError, match="NaN"):
        target_rank(np.array([0.0, np.nan]), 0)
    with pytest.raises(ValueError, match="got 2 targets for 1 score rows"):
        target_rank(np.zeros((1, 3)), [0, 1])
    with pytest.raises(ValueError, match=r"ranks must lie in \[0, 4\]"):
        rank_percentile(5, 5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        recall_at_k(np.array([0]), 0)
