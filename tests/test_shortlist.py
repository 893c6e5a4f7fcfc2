"""The shortlist action mode: K candidates from a first stage that never sees the target."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fiq_gym  # noqa: F401
from fiq_gym.action_modes import CANDIDATE_KEYS, best_indices
from fiq_gym.envs import ENV_IDS, FashionIQEnv
from fiq_gym.envs.sb3 import make_sb3_vec_env
from fiq_gym.errors import FallbackWarning
from fiq_gym.shortlist import DialogView, RetrieverFirstStage
from fiq_gym.users.base import CaptionBatch


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


def _small(small_catalog_path, **kwargs):
    kwargs.setdefault("shortlist", "random")
    kwargs.setdefault("shortlist_size", 8)
    return FashionIQEnv(catalog=small_catalog_path, action_mode="shortlist", **kwargs)


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_every_id_passes_both_checkers_in_shortlist_mode(env_id, small_catalog_path, quiet):
    category = ENV_IDS[env_id].get("category")
    env = gym.make(env_id, catalog=small_catalog_path, action_mode="shortlist", shortlist="random")
    single = FashionIQEnv(
        catalog=small_catalog_path, category=category, action_mode="shortlist", shortlist="random"
    )
    assert env.action_space == gym.spaces.Discrete(32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(single, warn=True)
    env.close()


def _ids_by_catalog() -> list[tuple[str, ...]]:
    """The registered ids, those on one large catalog together: one test builds it once (two
    parallel workers would each wait on the other's build of the same 100k catalog)."""
    groups: dict[str, list[str]] = {}
    for env_id in ENV_IDS:
        groups.setdefault("100k" if "100k" in env_id else env_id, []).append(env_id)
    return [tuple(ids) for ids in groups.values()]


@pytest.mark.slow
@pytest.mark.parametrize("env_ids", _ids_by_catalog(), ids=lambda ids: "+".join(i.split("/")[1] for i in ids))
def test_every_id_passes_both_checkers_with_the_shipped_first_stage(env_ids):
    for env_id in env_ids:
        env = gym.make(env_id, action_mode="shortlist")
        single = FashionIQEnv(category=ENV_IDS[env_id].get("category"), action_mode="shortlist")
        assert isinstance(single.first_stage, RetrieverFirstStage)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gym_check_env(env.unwrapped, skip_render_check=True)
            sb3_check_env(single, warn=True)
        env.close()


def test_spaces_and_defaults(small_catalog_path, quiet):
    env = _small(small_catalog_path, shortlist_size=5)
    obs, info = env.reset(seed=0)
    d, a = env.gallery.feature_dim, env.gallery.side_info.shape[1]
    assert set(CANDIDATE_KEYS) <= set(obs)
    assert obs["candidate_features"].shape == (5 * d,)
    assert obs["candidate_attributes"].shape == (5 * a,)
    assert obs["candidate_scores"].shape == (5,) and obs["candidate_mask"].tolist() == [1] * 5
    np.testing.assert_array_equal(
        obs["candidate_features"].reshape(5, d), env.gallery.features[info["candidates"]]
    )
    assert env.observation_space.contains(obs)
    # Candidate keys belong to shortlist mode only.
    with pytest.raises(ValueError, match="observation_keys"):
        FashionIQEnv(catalog=small_catalog_path, observation_keys=("caption", "candidate_mask"))
    with pytest.raises(ValueError, match="only applies to action_mode='shortlist'"):
        FashionIQEnv(catalog=small_catalog_path, shortlist="random")


def test_errors_are_one_line_and_name_the_fix(small_catalog_path, quiet):
    for kwargs, pattern in (
        ({"shortlist_size": 0}, "shortlist_size must be a positive integer"),
        ({"shortlist_size": 296}, "pass a smaller shortlist_size"),
        ({"explore": 1.5}, r"explore must be a fraction in \[0, 1\]"),
        ({"shortlist": "nearest"}, "shortlist must be 'retriever'"),
        ({"shortlist": "retriever"}, "does not fit this catalog.*shortlist='random'"),
    ):
        with pytest.raises(ValueError, match=pattern) as e:
            _small(small_catalog_path, **kwargs)
        assert "\n" not in str(e.value)
    env = _small(small_catalog_path)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        env.step(8)


def test_shortlist_never_holds_shown_items_and_follows_index_rules(small_catalog_path, quiet):
    env = _small(small_catalog_path, shortlist_size=16, explore=0.25)
    index = FashionIQEnv(catalog=small_catalog_path)
    rng = np.random.default_rng(0)
    for seed in range(15):
        _obs, info = env.reset(seed=seed)
        index.reset(options={"target": int(env.unwrapped._dialog.target[0]), "shown": info["shown"]})
        shown = [info["shown"]]
        done = False
        while not done:
            cands = info["candidates"]
            assert len(set(cands.tolist())) == 16
            assert not set(cands.tolist()) & set(shown)
            slot = int(rng.integers(16))
            _obs, reward, term, trunc, info = env.step(slot)
            _, r_index, term_i, trunc_i, info_i = index.step(int(cands[slot]))
            # Rank, reward and episode end are those of index mode showing the same item.
            assert (info["rank"], reward, term, trunc) == (info_i["rank"], r_index, term_i, trunc_i)
            shown.append(info["shown"])
            done = term or trunc


class _SameWords:
    """A stand-in shopper that says the same thing whatever the target: the only way two
    dialogs with different targets can share their history."""

    def __init__(self, inner):
        self.inner = inner

    def describe(self, targets, shown, rngs):
        return CaptionBatch(["is darker and has longer sleeves"] * len(targets), [()] * len(targets))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _candidates_for_target(env, target, shown, slots):
    env.unwrapped._dialog.user = _SameWords(env.unwrapped.user)
    _obs, info = env.reset(seed=3, options={"target": target, "shown": shown})
    out = [info["candidates"].copy()]
    for slot in slots:
        _obs, _, term, trunc, info = env.step(slot)
        out.append(info["candidates"].copy())
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("shortlist", ["random", "default"])
def test_candidates_do_not_depend_on_the_target(shortlist, small_catalog_path, quiet):
    if shortlist == "default":
        env = FashionIQEnv(category="dress", action_mode="shortlist")
    else:
        env = _small(small_catalog_path, explore=0.5)
    n = env.num_items
    runs = [_candidates_for_target(env, t, 0, [1, 2, 3, 4]) for t in (n - 1, n - 2, n // 2)]
    length = min(len(r) for r in runs)
    for turn in range(length):
        np.testing.assert_array_equal(runs[0][turn], runs[1][turn])
        np.testing.assert_array_equal(runs[0][turn], runs[2][turn])


def test_first_stage_view_has_no_target():
    assert not {"target", "targets"} & set(DialogView.__dataclass_fields__)


def _rollout_single(path, seed, slots, **kwargs):
    env = _small(path, **kwargs)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for slot in slots:
        obs, r, term, trunc, info = env.step(slot)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            obs, info = env.reset()
            out.append((obs, info))
    return out


@pytest.mark.parametrize("kwargs", [{}, {"explore": 0.5}, {"reward": "reciprocal_rank"}])
def test_vector_sub_env_k_equals_a_single_env(small_catalog_path, quiet, kwargs):
    n, steps = 3, 9
    rng = np.random.default_rng(1)
    slots = rng.integers(8, size=(steps, n))
    venv = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=n,
        vectorization_mode="vector_entry_point",
        catalog=small_catalog_path,
        action_mode="shortlist",
        shortlist="random",
        shortlist_size=8,
        **kwargs,
    )
    obs, info = venv.reset(seed=5)
    vec = [[({k: v[i] for k, v in obs.items()}, info["candidates"][i])] for i in range(n)]
    done = np.zeros(n, dtype=bool)
    for t in range(steps):
        obs, reward, term, trunc, info = venv.step(slots[t])
        for i in range(n):
            o = {k: v[i] for k, v in obs.items()}
            vec[i].append((o, info["candidates"][i], reward[i], term[i], trunc[i], done[i]))
        done = term | trunc
    for i in range(n):
        # The single env sees the same actions; after an episode ends the vector env's next
        # step is the reset (action ignored), which the single env does by reset().
        env = _small(small_catalog_path, **kwargs)
        o, inf = env.reset(seed=5 + i)
        _assert_same(o, vec[i][0][0])
        np.testing.assert_array_equal(inf["candidates"], vec[i][0][1])
        for t in range(steps):
            o_v, c_v, r_v, te_v, tr_v, was_done = vec[i][t + 1]
            if was_done:
                o, inf = env.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, inf = env.step(int(slots[t, i]))
            _assert_same(o, o_v)
            np.testing.assert_array_equal(inf["candidates"], c_v)
            assert (r, te, tr) == (r_v, te_v, tr_v)


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), explore=st.sampled_from([0.0, 0.25, 1.0]))
def test_same_seed_same_candidates(small_catalog_path, seed, explore):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        a = _rollout_single(small_catalog_path, seed, [0, 1, 2], explore=explore)
        b = _rollout_single(small_catalog_path, seed, [0, 1, 2], explore=explore)
    for x, y in zip(a, b, strict=True):
        _assert_same(x[0], y[0])


def test_candidate_order_is_shuffled(small_catalog_path, quiet):
    """Position carries no shortcut: the first stage's best candidate is in every slot."""
    env = _small(small_catalog_path)
    best_slots = set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        best_slots.add(int(np.argmax(obs["candidate_scores"])))
    assert len(best_slots) >= 6


def test_pickle_and_sb3_adapter(small_catalog_path, quiet):
    env = _small(small_catalog_path)
    env.reset(seed=0)
    env.step(1)
    clone = pickle.loads(pickle.dumps(env))
    a = env.step(2)
    b = clone.step(2)
    _assert_same(a[0], b[0])
    assert a[1:4] == b[1:4]
    venv = make_sb3_vec_env(
        "fiq_gym/FashionIQ-v3",
        num_envs=2,
        catalog=small_catalog_path,
        action_mode="shortlist",
        shortlist="random",
        shortlist_size=8,
    )
    venv.seed(0)
    venv.reset()
    for _ in range(6):
        obs, _reward, _dones, _infos = venv.step(np.array([0, 7]))
        assert obs["candidate_mask"].shape == (2, 8)
    venv.close()


def test_a_callable_first_stage_and_masked_slots(small_catalog_path, quiet):
    def only_three(view: DialogView) -> np.ndarray:
        scores = np.full((len(view.captions), view.gallery.num_items), -np.inf)
        scores[:, :3] = 0.5
        scores[:, 3:6] = [0.1, 0.2, 0.3]
        return scores

    env = _small(small_catalog_path, shortlist=only_three, shortlist_size=4)
    obs, info = env.reset(seed=0, options={"target": 100, "shown": 200})
    assert obs["candidate_mask"].sum() == 4
    assert sorted(info["candidates"].tolist()) == [0, 1, 2, 5]
    for _ in range(3):
        slot = int(np.flatnonzero(obs["candidate_mask"])[0])
        obs, *_rest, info = env.step(slot)
    assert obs["candidate_mask"].sum() == 3  # only 3 finite-scored items are left unseen
    empty = int(np.flatnonzero(obs["candidate_mask"] == 0)[0])
    with pytest.raises(ValueError, match="candidate slot .* is empty"):
        env.step(empty)


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.sampled_from([-np.inf, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0]), min_size=1, max_size=80),
    m=st.integers(0, 90),
)
def test_best_candidates_equal_a_full_stable_sort(scores, m):
    """The partial selection behind the shortlist ranks exactly like sorting every item."""
    s = np.array(scores)
    np.testing.assert_array_equal(best_indices(s, m), np.argsort(-s, kind="stable")[:m])


def test_retriever_first_stage_scores_do_not_depend_on_its_cache(quiet):
    """The shipped first stage keeps each dialog's state between turns; scoring a dialog from
    scratch must give the very same scores as scoring it turn by turn."""
    env = gym.make("fiq_gym/FashionIQ-v3", action_mode="shortlist")
    warm = env.unwrapped.first_stage
    env.reset(seed=3)
    for slot in (0, 5, 7):
        *_, terminated, truncated, _ = env.step(slot)
        if terminated or truncated:
            break
    dialog = env.unwrapped._dialog
    view = DialogView(
        gallery=dialog.tables,
        history=dialog.history.copy(),
        captions=[tuple(dialog.mode.caption_texts[0])],
        turn=dialog.turn.copy(),
        rngs=[np.random.default_rng(0)],
    )
    cold = RetrieverFirstStage(warm.net, warm.tokenizer, dialog.tables, "a fresh copy")
    assert len(view.captions[0]) >= 2
    np.testing.assert_array_equal(warm(view), cold(view))
    env.close()
