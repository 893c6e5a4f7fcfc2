"""Paired comparisons: the bootstrap interval covers known differences and is honest about zero."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.envs.evaluation import detectable_difference, paired_difference


def _paired_successes(rng, dialogs, p_a, p_b, seeds=1):
    """Correlated binary outcomes: a shared per-dialog difficulty, then each agent's success."""
    difficulty = rng.random(dialogs)
    a = (difficulty[None] < p_a + 0.05 * rng.standard_normal((seeds, 1))).astype(float)
    b = (difficulty[None] < p_b + 0.05 * rng.standard_normal((seeds, 1))).astype(float)
    noise = rng.random((seeds, dialogs)) < 0.1  # some dialogs flip independently
    return np.where(noise, 1 - a, a), b


def test_the_interval_covers_a_known_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_difference = 0.05
    covered = 0
    trials = 200
    for trial in range(trials):
        a = (rng.random(800) < 0.55).astype(float)
        b = (rng.random(800) < 0.55 - true_difference).astype(float)
        d = paired_difference(a, b, resamples=500, seed=trial)
        covered += d.low <= true_difference <= d.high
    assert 0.90 <= covered / trials <= 0.99


def test_identical_agents_give_an_interval_around_zero():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 500)) < 0.4).astype(float)
    d = paired_difference(a, a.copy())
    assert d.mean == 0 and d.low == 0 and d.high == 0 and not d.excludes_zero
    b = (rng.random((3, 500)) < 0.4).astype(float)  # same skill, different luck
    assert paired_difference(a, b).low <= 0 <= paired_difference(a, b).high


def test_a_clear_difference_is_detected_and_seeds_widen_the_interval():
    rng = np.random.default_rng(2)
    a, b = _paired_successes(rng, 1000, 0.65, 0.55, seeds=3)
    both = paired_difference(a, b)
    assert both.excludes_zero and both.low > 0 and both.resampled == "seeds and dialogs"
    one = paired_difference(a[0], b[0])
    assert one.resampled == "dialogs" and one.seeds == 1


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.integers(1, 3),
    dialogs=st.integers(2, 40),
    shift=st.floats(-5, 5, allow_nan=False),
    data_seed=st.integers(0, 2**16),
)
def test_shifting_and_swapping_move_the_interval_exactly(seeds, dialogs, shift, data_seed):
    rng = np.random.default_rng(data_seed)
    a, b = rng.random((seeds, dialogs)), rng.random((seeds, dialogs))
    d = paired_difference(a, b, resamples=200)
    moved = paired_difference(a + shift, b, resamples=200)
    assert moved.mean == pytest.approx(d.mean + shift, abs=1e-9)
    assert moved.low == pytest.approx(d.low + shift, abs=1e-9)
    assert moved.high == pytest.approx(d.high + shift, abs=1e-9)
    swapped = paired_difference(b, a, resamples=200)
    assert swapped.mean == pytest.approx(-d.mean, abs=1e-12)
    assert swapped.low == pytest.approx(-d.high, abs=1e-9) and swapped.high == pytest.approx(-d.low, abs=1e-9)


def test_bad_outcomes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="same dialogs and seeds"):
        paired_difference(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="at least 2 dialogs"):
        paired_difference(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.zeros(3), np.zeros(3), confidence=1.5)


def test_detectable_difference_follows_the_paired_formula():
    # z(0.975) + z(0.8) = 1.95996 + 0.84162
    assert detectable_difference(1000, 0.3) == pytest.approx(2.80158 * np.sqrt(0.3 / 1000), rel=1e-4)
    assert detectable_difference(1000, 0.3, seeds=3) < detectable_difference(1000, 0.3)
    with pytest.raises(ValueError, match="discordant"):
        detectable_difference(10, 1.5)
