"""Ranking maths: property tests against a brute-force definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fiq_gym.metrics import (
    best_log_rank_integral,
    best_log_rank_integral_per_dialog,
    best_rank_so_far,
    cumulative_hits_at_k,
    rank_percentile,
    recall_at_k,
    target_rank,
)

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
    for ranks in ([-1, 2], [0, np.nan]):  # a NaN rank lies in no range
        with pytest.raises(ValueError, match=r"ranks must lie in \[0, 4\]"):
            rank_percentile(np.array(ranks), 5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        recall_at_k(np.array([0]), 0)


# --- dialog metrics: cumulative Hits@K and the best log-rank integral -------------------------


def hits_by_brute_force(ranks: np.ndarray, k: int) -> list[float]:
    """ChatIR's Hits@k, read off its definition: dialogs whose target was below k at any turn so far."""
    dialogs, columns = ranks.shape
    return [
        sum(1 for e in range(dialogs) if any(ranks[e, s] < k for s in range(t + 1))) / dialogs
        for t in range(columns)
    ]


def bri_by_brute_force(row: np.ndarray) -> float:
    """One dialog's BRI, read off its definition: trapezoids of ln(best 1-based rank) per turn."""
    best, logs = None, []
    for rank in row:
        best = int(rank) if best is None else min(best, int(rank))
        logs.append(math.log(best + 1))
    turns = len(row) - 1
    if turns == 0:
        return logs[0]
    return sum((logs[t - 1] + logs[t]) / 2 for t in range(1, turns + 1)) / turns


@st.composite
def dialog_ranks(draw, max_dialogs: int = 8, max_turns: int = 6):
    """(ranks, N): ranks (E, T + 1) of a catalog of N items, with ranks near the cut-offs common."""
    n = draw(st.integers(1, 200))
    shape = (draw(st.integers(1, max_dialogs)), draw(st.integers(1, max_turns + 1)))
    near_top = st.integers(0, min(n - 1, 12))
    ranks = draw(hnp.arrays(np.int64, shape, elements=st.one_of(near_top, st.integers(0, n - 1))))
    return ranks, n


ks = st.sampled_from([1, 2, 5, 10, 50, 1000])


@given(dialog_ranks(), ks)
def test_cumulative_hits_match_brute_force(drawn, k):
    ranks, _ = drawn
    assert cumulative_hits_at_k(ranks, k) == pytest.approx(hits_by_brute_force(ranks, k))


@given(dialog_ranks(), ks, ks)
def test_cumulative_hits_rise_with_turn_and_k_and_bound_recall(drawn, k1, k2):
    ranks, _ = drawn
    small, large = sorted((k1, k2))
    hits_small, hits_large = cumulative_hits_at_k(ranks, small), cumulative_hits_at_k(ranks, large)
    assert np.all(np.diff(hits_small) >= 0), "counted once found: never falls with the turn"
    assert np.all(hits_small <= hits_large)
    for t in range(ranks.shape[1]):
        assert hits_small[t] >= recall_at_k(ranks[:, t], small)
    assert hits_small[0] == recall_at_k(ranks[:, 0], small)  # turn 0 has no past


@given(dialog_ranks())
def test_bri_matches_brute_force_per_dialog_and_on_average(drawn):
    ranks, _ = drawn
    per_dialog = [bri_by_brute_force(row) for row in ranks]
    assert best_log_rank_integral_per_dialog(ranks) == pytest.approx(per_dialog, abs=1e-12)
    assert best_log_rank_integral(ranks) == pytest.approx(np.mean(per_dialog), abs=1e-12)


@given(dialog_ranks())
def test_bri_lies_between_zero_and_log_n(drawn):
    ranks, n = drawn
    assert 0.0 <= best_log_rank_integral(ranks) <= math.log(n) + 1e-12
    assert best_log_rank_integral(np.zeros_like(ranks)) == 0.0
    assert best_log_rank_integral(np.full_like(ranks, n - 1)) == pytest.approx(math.log(n))


@given(dialog_ranks(), st.data())
def test_lowering_any_rank_never_raises_bri(drawn, data):
    ranks, _ = drawn
    e = data.draw(st.integers(0, ranks.shape[0] - 1))
    t = data.draw(st.integers(0, ranks.shape[1] - 1))
    better = ranks.copy()
    better[e, t] = data.draw(st.integers(0, int(ranks[e, t])))
    assert best_log_rank_integral_per_dialog(better)[e] <= best_log_rank_integral_per_dialog(ranks)[e] + 1e-12
    assert best_log_rank_integral(better) <= best_log_rank_integral(ranks) + 1e-12


@given(dialog_ranks())
def test_best_rank_so_far_is_the_running_minimum(drawn):
    ranks, _ = drawn
    best = best_rank_so_far(ranks)
    for e, t in np.ndindex(*ranks.shape):
        assert best[e, t] == min(ranks[e, : t + 1])


def test_finding_the_target_earlier_gives_a_lower_bri():
    # the same ranks, reached one turn apart
    early = np.array([[50, 0, 0, 0]])
    late = np.array([[50, 50, 0, 0]])
    assert best_log_rank_integral(early) < best_log_rank_integral(late)
    assert cumulative_hits_at_k(early, 1).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert cumulative_hits_at_k(late, 1).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_bri_of_turn_zero_alone_is_its_log_rank():
    ranks = np.array([[0], [9], [99]])
    assert best_log_rank_integral(ranks) == pytest.approx((math.log(1) + math.log(10) + math.log(100)) / 3)


#: docs/benchmarks.md's worked example: 3 dialogs, turns 0..3, N = 100 items.
EXAMPLE_RANKS = np.array([[40, 8, 12, 0], [3, 3, 0, 0], [99, 60, 70, 20]])


def test_the_worked_example_of_the_docs():
    ranks = EXAMPLE_RANKS
    assert best_rank_so_far(ranks).tolist() == [[40, 8, 8, 0], [3, 3, 0, 0], [99, 60, 60, 20]]
    third = 1 / 3
    assert cumulative_hits_at_k(ranks, 1) == pytest.approx([0, 0, third, 2 * third])
    assert cumulative_hits_at_k(ranks, 5) == pytest.approx([third, third, third, 2 * third])
    assert cumulative_hits_at_k(ranks, 10) == pytest.approx([third, 2 * third, 2 * third, 2 * third])
    assert cumulative_hits_at_k(ranks, 50) == pytest.approx([2 * third, 2 * third, 2 * third, 1])
    # R@10 at turn 2 drops (dialog a's target fell to rank 12); Hits@10 keeps it
    assert recall_at_k(ranks[:, 2], 10) == pytest.approx(third)
    a = (math.log(41) / 2 + math.log(9) + math.log(9) + math.log(1) / 2) / 3
    b = (math.log(4) / 2 + math.log(4) + math.log(1) + math.log(1) / 2) / 3
    c = (math.log(100) / 2 + math.log(61) + math.log(61) + math.log(21) / 2) / 3
    assert b == pytest.approx(math.log(2))
    per_dialog = best_log_rank_integral_per_dialog(ranks)
    assert per_dialog == pytest.approx([a, b, c])
    assert [round(x, 3) for x in per_dialog] == [2.084, 0.693, 4.016]
    assert round(best_log_rank_integral(ranks), 3) == 2.264
    # BRI of the first t turns, the benchmark tables' BRI column
    by_turn = [round(best_log_rank_integral(ranks[:, : t + 1]), 3) for t in range(4)]
    assert by_turn == [3.235, 2.900, 2.617, 2.264]


@pytest.mark.parametrize(
    ("ranks", "k", "message"),
    [
        (
            np.array([1, 2, 3]),
            1,
            r"ranks must be 2-D, \(dialogs, turns \+ 1\), got shape \(3,\); .*ranks\[None, :\]",
        ),
        (np.zeros((2, 2, 2), np.int64), 1, r"must be 2-D.*got shape \(2, 2, 2\)"),
        (np.zeros((0, 4), np.int64), 1, r"hold no dialog or no turn"),
        (np.zeros((3, 0), np.int64), 1, r"hold no dialog or no turn"),
        (np.array([[0.0, 1.5]]), 1, r"must be integer 0-based ranks, got dtype float64; .*dtype=np.int64"),
        (np.array([[True, False]]), 1, r"must be integer 0-based ranks, got dtype bool"),
        (
            np.array([[3, 2], [1, -1]]),
            1,
            r"0-based \(>= 0\), got -1 for dialog 1 at turn 1; a 1-based rank r is r - 1",
        ),
        (np.array([[3, 2]]), 0, r"k must be an integer of at least 1, got 0"),
        (np.array([[3, 2]]), 2.5, r"k must be an integer of at least 1, got 2.5"),
    ],
)
def test_dialog_metrics_name_bad_inputs(ranks, k, message):
    with pytest.raises(ValueError, match=message):
        cumulative_hits_at_k(ranks, k)
    if "k must be" not in message:
        with pytest.raises(ValueError, match=message):
            best_log_rank_integral(ranks)
