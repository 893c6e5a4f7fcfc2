"""Action modes as objects: each owns its space, validation and rule for what a turn shows;
the env's step plays exactly :meth:`DialogBatch.outcome`, which ``fiq-gym play`` asks."""

from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from earlier_pickles import earlier_state
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from fiq_gym.action_modes import MODES, IndexMode, QueryMode, ScoresMode, ShortlistMode, mode_class
from fiq_gym.envs.inner import inner_env, similar_rank, step_outcome
from fiq_gym.errors import FallbackWarning
from fiq_gym.ranking import DenseRanker


def _features(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    f = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _tables(n: int, d: int = 4) -> SimpleNamespace:
    f = _features(n, d)
    return SimpleNamespace(features=f, num_items=n, feature_dim=d, side_info=np.zeros((n, 3), np.float32))


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


SETTINGS = SimpleNamespace(
    action_mode="index", max_turns=3, shortlist_size=3, num_explore=0, observation_keys=()
)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(3, 30),
    seen=st.lists(st.integers(0, 29), min_size=1, max_size=2),
    target=st.integers(0, 29),
    data=st.data(),
)
def test_scores_mode_shows_the_best_item_not_shown_before(n, seen, target, data):
    seen = [s % n for s in seen]
    tables = _tables(n)
    scores = np.array([data.draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))], dtype=np.float32)
    history = np.array([[*seen, -1]], dtype=np.int64)
    mode = ScoresMode(tables, 1, SETTINGS)
    shown, rank, repeated = mode.outcome(
        DenseRanker(tables.features), np.arange(1), scores, np.array([target % n]), history
    )
    assert shown[0] not in seen and not repeated[0]
    unseen = np.setdiff1d(np.arange(n), seen)
    assert scores[0, shown[0]] == scores[0, unseen].max()
    # the target's rank: how many other items score at least as high (ties pessimistic)
    t = target % n
    assert rank[0] == (scores[0] >= scores[0, t]).sum() - 1


def test_index_and_shortlist_modes_show_the_chosen_item_and_flag_repeats():
    tables = _tables(6)
    ranker = DenseRanker(tables.features)
    history = np.array([[2, 4, -1]])
    shown, rank, repeated = IndexMode(tables, 1, SETTINGS).outcome(
        ranker, np.arange(1), np.array([4]), np.array([1]), history
    )
    assert shown[0] == 4 and repeated[0]
    assert rank[0] == ranker.similar_ranks(np.array([4]), np.array([1]))[0]
    shortlist = ShortlistMode(tables, 1, SETTINGS, first_stage=lambda view: np.zeros((1, 6)))
    shortlist.candidates[0] = [5, 0, 3]
    shortlist.candidate_mask[0] = [1, 1, 0]
    shown, _, repeated = shortlist.outcome(ranker, np.arange(1), np.array([1]), np.array([1]), history)
    assert shown[0] == 0 and not repeated[0]
    with pytest.raises(ValueError, match="candidate slot 2 is empty"):
        shortlist.outcome(ranker, np.arange(1), np.array([2]), np.array([1]), history)


def test_query_mode_shows_the_unseen_item_nearest_the_query():
    tables = _tables(8)
    query = tables.features[[5]]
    mode = QueryMode(tables, 1, SETTINGS)
    shown, _, _ = mode.outcome(
        DenseRanker(tables.features), np.arange(1), query, np.array([0]), np.array([[0, -1]])
    )
    assert shown[0] == 5
    shown, _, _ = mode.outcome(
        DenseRanker(tables.features), np.arange(1), query, np.array([0]), np.array([[5, -1]])
    )
    assert shown[0] != 5


def test_modes_own_their_spaces_and_checks():
    tables = _tables(10, d=4)
    assert IndexMode(tables, 2, SETTINGS).space == spaces.Discrete(10)
    assert QueryMode(tables, 2, SETTINGS).space.shape == (4,)
    assert ScoresMode(tables, 2, SETTINGS).space.shape == (10,)
    with pytest.raises(ValueError, match="integer item index"):
        IndexMode(tables, 1, SETTINGS).check(np.float32(1.0), batched=False)
    with pytest.raises(ValueError, match=r"lie in \[-1, 1\]"):
        QueryMode(tables, 1, SETTINGS).check(np.full(4, 2.0, np.float32), batched=False)
    with pytest.raises(ValueError, match="must be one of"):
        mode_class("slates")
    with pytest.raises(ValueError, match="needs a first stage"):
        ShortlistMode.build(tables, 1, SETTINGS)
    with pytest.raises(ValueError, match="only applies to action_mode='shortlist'"):
        IndexMode.build(tables, 1, SETTINGS, first_stage=lambda view: None)


@pytest.mark.parametrize("action_mode", sorted(MODES))
def test_step_plays_exactly_the_outcome_play_announces(small_catalog_path, quiet, action_mode):
    kwargs = {"shortlist": "random", "shortlist_size": 6} if MODES[action_mode].uses_first_stage else {}
    env = gym.make("fiq_gym/FashionIQ-v3", catalog=str(small_catalog_path), action_mode=action_mode, **kwargs)
    env.action_space.seed(1)
    _, info = env.reset(seed=4)
    assert similar_rank(env, info["shown"], int(inner_env(env)._dialog.target[0])) == info["rank"]
    for _ in range(4):
        action = env.action_space.sample()
        if action_mode == "index":
            action = info["shown"]  # a repeat, flagged
        announced = step_outcome(env, action)
        _, _, terminated, truncated, info = env.step(action)
        assert announced == (info["shown"], info["rank"])
        if action_mode == "index":
            assert info["repeated"]
        if terminated or truncated:
            break
    env.close()


def test_a_shortlist_pickle_of_the_earlier_layout_resumes(small_catalog_path, quiet):
    """fiq-gym 0.2.0 pickled the shortlist's state among the engine's keys; such a pickle
    resumes with the same candidates and the same next step."""
    env = gym.make(
        "fiq_gym/FashionIQ-v3", catalog=str(small_catalog_path), action_mode="shortlist", shortlist="random"
    ).unwrapped
    env.reset(seed=2)
    env.step(0)
    state = earlier_state(env)
    flat = {**state["dialog"], **state["dialog"].pop("mode")}
    copy = pickle.loads(pickle.dumps(env))
    old = type(env).__new__(type(env))
    old.__setstate__({**state, "dialog": flat})
    np.testing.assert_array_equal(old._dialog.mode.candidates, env._dialog.mode.candidates)
    results = [e.step(1) for e in (env, copy, old)]
    for r in results[1:]:
        np.testing.assert_array_equal(r[0]["candidate_mask"], results[0][0]["candidate_mask"])
        assert r[1:4] == results[0][1:4] and r[4]["shown"] == results[0][4]["shown"]


def test_the_dialog_engine_and_its_modes_need_no_torch():
    """The core engine runs numpy alone: torch comes with the shoppers and first stages that use it."""
    import subprocess
    import sys

    code = "import sys, fiq_gym.dialog_engine, fiq_gym.action_modes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
