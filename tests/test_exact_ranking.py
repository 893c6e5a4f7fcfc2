"""Exact ranking (fiq_gym.ranking): a reduced-precision scan plus a recheck inside a proven
error band gives the exact ranks and shown items, on random data full of ties, duplicates of
the target and near-ties, in one shard or several."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiq_gym.metrics import target_rank
from fiq_gym.ranking import DenseRanker, best_unseen, make_ranker
from fiq_gym.ranking.exact import GalleryShard
from fiq_gym.ranking.sharded import ExactRanker, shard_bounds

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exact_scores(query: np.ndarray, features: np.ndarray) -> list[Fraction]:
    """Every item's dot product with ``query`` as an exact rational (the reference)."""
    q = [Fraction(float(x)) for x in query]
    return [
        sum((a * Fraction(float(b)) for a, b in zip(q, row, strict=True)), Fraction(0)) for row in features
    ]


def reference(
    queries: np.ndarray, features: np.ndarray, targets: np.ndarray, history: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ranks (others scoring at least the target's) and best unseen items (lowest index on ties)."""
    ranks, best = [], []
    for q, t, seen in zip(queries, targets, history, strict=True):
        scores = exact_scores(q, features)
        ranks.append(sum(s >= scores[t] for s in scores) - 1)
        unseen = [j for j in range(len(features)) if j not in set(seen.tolist())]
        best.append(max(unseen, key=lambda j: (scores[j], -j)))
    return np.array(ranks), np.array(best)


@st.composite
def galleries(draw: st.DrawFn) -> dict:
    """Features with ties: copies of the target, near-copies one float32 step away, values on a
    coarse grid, magnitudes from float16-subnormal to large; plus queries and histories."""
    n = draw(st.integers(2, 40))
    d = draw(st.integers(1, 10))
    b = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    features = rng.standard_normal((n, d))
    if draw(st.booleans()):
        features /= np.linalg.norm(features, axis=1, keepdims=True)
    grid = draw(st.sampled_from([None, 2, 8, 2**13]))
    if grid is not None:  # many exact ties
        features = np.round(features * grid) / grid
    features *= draw(st.sampled_from([1.0, 2.0**-20, 2.0**-12, 1000.0]))
    features = features.astype(np.float32)
    targets = rng.integers(n, size=b)
    for t in targets:
        for j in rng.choice(n, size=draw(st.integers(0, 3)), replace=True):
            features[j] = features[t]  # exact duplicates of the target
        if draw(st.booleans()):  # a near-duplicate one float32 step away in one coordinate
            j, k = rng.integers(n), rng.integers(d)
            features[j] = features[t]
            features[j, k] = np.nextafter(features[t, k], np.float32(rng.choice([-np.inf, np.inf])))
    kind = draw(st.sampled_from(["items", "random", "zero"]))
    shown = rng.integers(n, size=b)
    if kind == "items":
        queries = features[shown]
    elif kind == "random":
        queries = rng.uniform(-1, 1, (b, d)).astype(np.float32)
    else:
        queries = np.zeros((b, d), dtype=np.float32)
    turns = draw(st.integers(0, min(5, n - 1)))
    history = np.full((b, 6), -1, dtype=np.int64)
    for i in range(b):
        history[i, :turns] = rng.choice(n, size=turns, replace=False)
    return {
        "features": features,
        "queries": queries,
        "targets": targets,
        "history": history,
        "shards": draw(st.integers(1, min(3, n))),
        "scan": draw(st.sampled_from(["float32", "float16"])),
    }


@SETTINGS
@given(galleries())
def test_exact_ranks_and_best_items_match_exact_arithmetic(case):
    features, queries, targets, history = case["features"], case["queries"], case["targets"], case["history"]
    ranker = ExactRanker(features, scan=case["scan"], shards=case["shards"])
    want_ranks, want_best = reference(queries, features, targets, history)
    best, ranks = ranker.query_ranks(queries, targets, history)
    np.testing.assert_array_equal(ranks, want_ranks)
    np.testing.assert_array_equal(best, want_best)
    # A shard told nothing about where the targets are rechecks them like any other item.
    counts, best = GalleryShard(features, scan=case["scan"]).scan(queries, features[targets], history)
    np.testing.assert_array_equal(counts - 1, want_ranks)
    np.testing.assert_array_equal(best, want_best)


@SETTINGS
@given(galleries())
def test_shards_and_scans_agree_with_each_other(case):
    features, targets, history = case["features"], case["targets"], case["history"]
    shown = np.arange(len(targets)) % len(features)
    answers = set()
    for scan in ("float32", "float16"):
        for shards in range(1, min(3, len(features)) + 1):
            ranker = ExactRanker(features, scan=scan, shards=shards)
            ranks = ranker.similar_ranks(shown, targets)
            best, query_ranks = ranker.query_ranks(case["queries"], targets, history)
            answers.add((ranks.tobytes(), best.tobytes(), query_ranks.tobytes()))
    assert len(answers) == 1


@st.composite
def exact_float32_galleries(draw: st.DrawFn) -> dict:
    """Data on which float32 arithmetic is exact in any order, D <= 32: queries on a 2**-4 grid
    in [-1, 1] and features on a 2**-13 grid (finer than float16 holds above 0.25), so every
    partial sum of a query's scores is a multiple of 2**-17 below 2**5 (22 bits); or features
    on a 2**-2 grid, coarse enough for item-to-item scores (index mode) to be exact too, and
    full of ties."""
    n, d, b = draw(st.integers(2, 60)), draw(st.integers(1, 32)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    step = draw(st.sampled_from([2.0**-13, 2.0**-2]))
    features = (np.round(rng.uniform(-1, 1, (n, d)) / step) * step).astype(np.float32)
    targets = rng.integers(n, size=b)
    for t in targets:
        features[rng.choice(n, size=draw(st.integers(0, 3)))] = features[t]
    shown = rng.integers(n, size=b)
    queries = (np.round(rng.uniform(-1, 1, (b, d)) * 16) / 16).astype(np.float32)
    history = np.where(rng.random((b, 3)) < 0.5, rng.integers(n, size=(b, 3)), -1)
    history[:, 0] = shown
    return {
        "features": features,
        "shown": shown,
        "targets": targets,
        "queries": queries,
        "history": history,
        "items_exact": step == 2.0**-2,
    }


@SETTINGS
@given(exact_float32_galleries(), st.integers(1, 3), st.sampled_from(["exact", "float16"]))
def test_reduced_precision_equals_float32_ranks_where_float32_is_exact(case, shards, scoring):
    """Against the default float32 ranks themselves: where float32 products are exact, the
    float16 scan (which rounds these features) with its recheck gives the same ranks and items."""
    features, targets, history = case["features"], case["targets"], case["history"]
    shards = min(shards, len(features))
    exact = make_ranker(features, scoring, shards, shard_mode="inline")
    dense = DenseRanker(features)
    if case["items_exact"]:
        np.testing.assert_array_equal(
            exact.similar_ranks(case["shown"], targets), dense.similar_ranks(case["shown"], targets)
        )
    got_best, got_ranks = exact.query_ranks(case["queries"], targets, history)
    want_best, want_ranks = dense.query_ranks(case["queries"], targets, history)
    np.testing.assert_array_equal(got_ranks, want_ranks)
    np.testing.assert_array_equal(got_best, want_best)


def test_the_recheck_decides_what_the_float16_scan_gets_wrong():
    """1 - 2**-20 rounds to 1.0 in float16: the scan alone ties the two items (rank 1), the
    exact answer is that only the target scores 1 (rank 0), and the first item is the best."""
    features = np.array([[1.0 - 2.0**-20], [1.0]], dtype=np.float32)
    query = np.ones((1, 1), dtype=np.float32)
    half = features.astype(np.float16).astype(np.float32)
    assert target_rank(query @ half.T, np.array([1]))[0] == 1  # what a bare float16 scan says
    ranker = ExactRanker(features, scan="float16")
    assert ranker.similar_ranks(np.array([1]), np.array([1]))[0] == 0
    best, ranks = ranker.query_ranks(-query, np.array([0]), np.full((1, 1), -1))
    assert best[0] == 0 and ranks[0] == 0  # under -q the smaller value wins


def test_the_scan_bound_holds_for_every_item():
    """The proven band contains every scanned score's distance to the exact one."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((500, 60)).astype(np.float32)
    queries = rng.standard_normal((8, 60)).astype(np.float32)
    for scan in ("float32", "float16"):
        shard = GalleryShard(features, scan=scan)
        q64 = queries.astype(np.float64)
        bound = shard.scan_bound(np.linalg.norm(q64, axis=1))
        scanned = (queries @ features.astype(scan).astype(np.float32).T).astype(np.float64)
        true = q64 @ features.astype(np.float64).T  # within ~1e-13 of exact, far inside the bound
        assert (np.abs(scanned - true) <= bound[:, None] * 0.999).all()


def test_shard_bounds_cover_the_gallery_in_near_equal_parts():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(5, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_best_unseen_is_the_first_highest_unshown_item():
    scores = np.array([[0.5, 0.9, 0.9, 0.1]], dtype=np.float32)
    assert best_unseen(scores, np.array([[-1]]))[0] == 1
    assert best_unseen(scores, np.array([[1, -1]]))[0] == 2


def test_make_ranker_refuses_what_cannot_be_exact_and_names_the_fix():
    features = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="scoring='exact'"):
        make_ranker(features, "float32", shards=2)
    with pytest.raises(ValueError, match="scoring must be one of"):
        make_ranker(features, "bfloat16")
    with pytest.raises(ValueError, match="at most 4"):
        make_ranker(features, "exact", shards=5)
    with pytest.raises(ValueError, match="float16's range"):
        make_ranker(features * 1e5, "float16")
    assert isinstance(make_ranker(features), DenseRanker)
