"""The slate setting's pieces (issue 33's measurement): the shopper's pick rule, the reader's
belief with picks, and the planned slates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.agents.posterior import label_beliefs
from fiq_gym.agents.slate_posterior import SlateReader, horizon_slate, partition_slate, slate_of, top_slate
from fiq_gym.gallery import gallery_of
from fiq_gym.users.template import (
    SHADE_SALIENCE_WITH_COLOR_CHANGE,
    TemplateNoise,
    TemplateUser,
    column_salience,
    differing_columns,
)
from fiq_gym.users.template_likelihood import TemplateLikelihood

pytestmark = pytest.mark.filterwarnings("ignore::fiq_gym.errors.FallbackWarning")


def _by_hand(user: TemplateUser, truth, target: int, slate: list[int]) -> int:
    """The pick rule as its docstring states it, one pair at a time."""
    names = user._book.type_names
    weights = column_salience(names)
    color, shade = names.index("color"), len(names) - 1
    distances = []
    for s in slate:
        gap = None if truth.luma is None else np.array([truth.luma[target] - truth.luma[s]])
        differs = differing_columns(
            truth.codes[[target]],
            truth.codes[[s]],
            truth.categories[[target]],
            truth.categories[[s]],
            gap,
            20.0,
        )[0]
        w = weights.copy()
        if differs[color]:
            w[shade] = SHADE_SALIENCE_WITH_COLOR_CHANGE
        distances.append(float((differs * w).sum()))
    return int(np.flatnonzero(np.array(distances) == min(distances))[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), k=st.integers(2, 6))
def test_the_shopper_picks_the_least_different_item_and_its_target_when_shown(small_catalog, seed, k):
    user = TemplateUser(small_catalog)
    truth = label_beliefs(small_catalog, gallery_of(small_catalog))
    rng = np.random.default_rng(seed)
    targets = rng.integers(len(small_catalog), size=8)
    slates = np.stack([rng.choice(len(small_catalog), size=k, replace=False) for _ in targets])
    picks = user.pick(targets, slates)
    for t, slate, j in zip(targets, slates, picks, strict=True):
        assert j == _by_hand(user, truth, int(t), slate.tolist())
    slates[:, k - 1] = targets  # the target itself differs in nothing: it is picked (or a twin before it)
    picks = user.pick(targets, slates)
    for t, slate, j in zip(targets, slates, picks, strict=True):
        assert slate[j] == t or _by_hand(user, truth, int(t), slate.tolist()) == j
    # one slate for all targets broadcasts
    np.testing.assert_array_equal(
        user.pick(targets, slates[0]), user.pick(targets, np.tile(slates[0], (8, 1)))
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), k=st.integers(2, 5), noisy=st.booleans())
def test_the_slate_belief_stays_a_distribution_that_keeps_the_target(small_catalog, seed, k, noisy):
    """With the labels (floor 0), picks and captions never rule the target out."""
    noise = TemplateNoise(omit=0.3, wrong_color=0.1) if noisy else None
    user = TemplateUser(small_catalog, noise=noise)
    truth = label_beliefs(small_catalog, gallery_of(small_catalog))
    shopper = user.imagining(truth.codes, truth.categories, truth.luma)
    likelihood = TemplateLikelihood(small_catalog.vocabulary, small_catalog.category_names, user.noise, 3)
    reader = SlateReader(likelihood, truth, shopper)
    rng = np.random.default_rng(seed)
    target = int(rng.integers(len(small_catalog)))
    for _ in range(4):
        slate = rng.choice(np.flatnonzero(np.arange(len(small_catalog)) != target), size=k, replace=False)
        picked = int(shopper.pick(np.array([target]), slate)[0])
        caption = shopper.describe(np.array([target]), slate[picked : picked + 1], rng).texts[0]
        reader.observe(slate, picked, caption)
        belief = reader.belief()
        assert belief.sum() == pytest.approx(1.0) and np.all(belief >= 0)
        assert belief[target] > 0, caption
        assert np.all(belief[slate] == 0)


def test_planned_slates_are_distinct_probable_items_led_by_the_most_probable(small_catalog):
    user = TemplateUser(small_catalog)
    truth = label_beliefs(small_catalog, gallery_of(small_catalog))
    shopper = user.imagining(truth.codes, truth.categories, truth.luma)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(len(small_catalog), 0.3))
    top = top_slate(p, 4)
    np.testing.assert_array_equal(top, np.argsort(-p)[:4])
    planned = partition_slate(p, 4, left=3, shopper=shopper)
    assert len(set(planned.tolist())) == 4 and planned[0] == top[0]
    assert set(planned.tolist()) <= set(np.argsort(-p)[:24].tolist())
    np.testing.assert_array_equal(partition_slate(p, 4, left=1, shopper=shopper), top)  # last turn: top
    # horizon: the same search; with two turns left it weighs the pick as partition does (the
    # next slate's top K once), on the last turn it is top, and it is a slate of distinct items
    for seed in range(3):
        q = np.random.default_rng(seed).dirichlet(np.full(len(small_catalog), 0.3))
        np.testing.assert_array_equal(
            horizon_slate(q, 4, left=2, shopper=shopper), partition_slate(q, 4, left=2, shopper=shopper)
        )
    np.testing.assert_array_equal(horizon_slate(p, 4, left=1, shopper=shopper), top)
    far = horizon_slate(p, 4, left=5, shopper=shopper)
    assert len(set(far.tolist())) == 4 and far[0] == top[0]
    np.testing.assert_array_equal(slate_of("horizon", p, 4, 5, shopper), far)
    with pytest.raises(ValueError, match="policy must be one of"):
        slate_of("best", p, 4, 5, shopper)


@pytest.mark.slow
def test_the_planning_headroom_benchmark_writes_its_tables(tmp_path):
    from fiq_gym.benchmarks.planning_headroom import main, simulate

    found = simulate("default", "partition", 4, episodes=6)
    assert found.shape == (6,) and np.all((found == -1) | ((found >= 1) & (found <= 5)))
    assert (
        main(
            [
                "--configurations",
                "default",
                "--slate-sizes",
                "1",
                "3",
                "--episodes",
                "6",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    text = (tmp_path / "planning_headroom.md").read_text()
    assert "| 3 | partition |" in text and "- K = 3, partition - top: turn 1:" in text and "Revision:" in text
    assert "horizon" not in text.split("Planning over", 1)[1]  # asked for only with --policies
    args = ["--configurations", "default", "--slate-sizes", "3", "--episodes", "6", "--feedback", "pick"]
    assert main([*args, "--policies", "partition", "horizon", "--out", str(tmp_path)]) == 0
    pick = (tmp_path / "planning_headroom-pick.md").read_text()
    assert "a shopper that only picks" in pick and "| 3 | horizon |" in pick
    assert "- K = 3, horizon - top: turn 1:" in pick and "- K = 3, partition - top: turn 1:" in pick
    with pytest.raises(ValueError, match="feedback must be one of"):
        simulate("default", "top", 3, episodes=1, feedback="stars")
