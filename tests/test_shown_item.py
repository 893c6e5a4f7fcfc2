"""The one rule for which item a turn shows (the env's step and play both call it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.dialog_engine import shown_item


def _features(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    f = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(3, 30),
    seen=st.lists(st.integers(0, 29), min_size=1, max_size=2),
    data=st.data(),
)
def test_scores_mode_shows_the_best_item_not_shown_before(n, seen, data):
    seen = [s % n for s in seen]
    scores = np.array([data.draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))], dtype=np.float32)
    history = np.array([[*seen, -1]], dtype=np.int64)
    shown, out_scores, repeated = shown_item("scores", scores, _features(n), history)
    assert shown[0] not in seen
    unseen = np.setdiff1d(np.arange(n), seen)
    assert scores[0, shown[0]] == scores[0, unseen].max()
    assert out_scores is scores and not repeated[0]


def test_index_and_shortlist_modes_show_the_chosen_item_and_flag_repeats():
    f = _features(6)
    history = np.array([[2, 4, -1]])
    shown, scores, repeated = shown_item("index", np.array([4]), f, history)
    assert shown[0] == 4 and repeated[0]
    # a (1, D) product there, a (D,) one here: BLAS kernels whose last bits may differ by CPU
    np.testing.assert_allclose(scores[0], f[4] @ f.T, rtol=1e-5, atol=1e-6)
    shown, _, repeated = shown_item("shortlist", np.array([1]), f, history, candidates=np.array([[5, 0, 3]]))
    assert shown[0] == 0 and not repeated[0]
    with pytest.raises(ValueError, match="candidates"):
        shown_item("shortlist", np.array([1]), f, history)


def test_query_mode_ranks_by_similarity_to_the_query():
    f = _features(8)
    query = f[[5]]
    shown, scores, _ = shown_item("query", query, f, np.array([[0, -1]]))
    assert shown[0] == 5
    np.testing.assert_allclose(scores, query @ f.T)
