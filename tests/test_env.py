"""FashionIQEnv: the Gymnasium contract, the documented semantics, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from earlier_pickles import earlier_state
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fiq_gym  # noqa: F401  (registers the ids)
from fiq_gym.dialog_engine import OBSERVATION_KEYS
from fiq_gym.envs import ENV_IDS, FashionIQEnv
from fiq_gym.envs.registration import SUPPORTED_ENV_IDS, successor_env_id
from fiq_gym.errors import FallbackWarning
from fiq_gym.text import split_words

# The env's Gymnasium contract: CI runs it again on the rllib extra's Gymnasium 1.2.2.
pytestmark = pytest.mark.env_contract

ACTION_MODES = ("index", "query", "scores")


@pytest.fixture
def make_env(small_catalog_path):
    def make(**kwargs):
        kwargs.setdefault("catalog", small_catalog_path)
        return FashionIQEnv(**kwargs)

    return make


def _random_action(env, rng):
    if env.config.action_mode == "index":
        return int(rng.integers(env.num_items))
    return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)


def _rollout(env, seed, steps=12):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(_random_action(env, rng))
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            out.append((obs, info))
    return out


# --- registration and checkers -------------------------------------------------------------


@pytest.mark.parametrize("env_id", list(ENV_IDS))
@pytest.mark.parametrize("action_mode", ACTION_MODES)
def test_registered_ids_pass_both_checkers(env_id, action_mode, small_catalog_path):
    with warnings.catch_warnings():
        # The small catalog has no features (FallbackWarning).
        warnings.simplefilter("ignore", FallbackWarning)
        env = gym.make(env_id, catalog=small_catalog_path, action_mode=action_mode)
        single = FashionIQEnv(catalog=small_catalog_path, action_mode=action_mode, **ENV_IDS[env_id])
    assert env.spec.max_episode_steps == gym.spec(env_id).max_episode_steps == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(single, warn=True)
    env.close()


def test_default_catalog_env_and_module_prefix_make():
    env = gym.make("fiq_gym:fiq_gym/FashionIQ-v3")
    obs, _info = env.reset(seed=0)
    assert env.unwrapped.num_items == 10_000
    assert env.observation_space.contains(obs)
    tables = env.unwrapped.gallery
    assert tables.feature_source == "catalog" and tables.side_info_source == "predicted"
    # No dead dimensions: every feature varies across the gallery (issue 15: 68 of 128 did not).
    assert tables.feature_dim == 45 and (np.ptp(tables.features, axis=0) > 0).all()
    env.close()


def test_a_recorded_spec_of_an_earlier_version_is_refused(small_catalog_path):
    # gym.make(EnvSpec) skips the registry: a spec recorded by 0.1.0 (a Minari dataset's) still fails.
    old = dataclasses.replace(gym.spec("fiq_gym/FashionIQ-v3"), id="fiq_gym/FashionIQ-v1")
    with pytest.raises(
        ValueError, match=r"FashionIQ-v1 is an environment version .*make fiq_gym/FashionIQ-v3"
    ):
        gym.make(old, catalog=small_catalog_path)


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_a_recorded_spec_of_an_earlier_version_is_refused_by_make_vec(small_catalog_path, mode):
    old = dataclasses.replace(gym.spec("fiq_gym/FashionIQ-v3"), id="fiq_gym/FashionIQ-v1")
    with pytest.raises(
        ValueError, match=r"FashionIQ-v1 is an environment version .*make fiq_gym/FashionIQ-v3"
    ):
        gym.make_vec(old, num_envs=2, vectorization_mode=mode, catalog=small_catalog_path)


def test_max_turns_that_disagrees_with_the_registered_cap_warns(small_catalog_path):
    with pytest.warns(UserWarning, match="pass max_episode_steps=8 to gym.make"):
        gym.make("fiq_gym/FashionIQ-v3", catalog=small_catalog_path, max_turns=8)
    with pytest.warns(UserWarning, match="made with max_episode_steps=6: pass max_episode_steps=8"):
        gym.make("fiq_gym/FashionIQ-v3", catalog=small_catalog_path, max_turns=8, max_episode_steps=6)
    env = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=small_catalog_path,
        max_turns=8,
    )
    assert env.unwrapped.config.max_turns == 8


@pytest.mark.parametrize("max_episode_steps", [8, 9, -1])
def test_max_turns_with_a_cap_that_lets_it_play_does_not_warn(small_catalog_path, max_episode_steps):
    # docs/rl.md: gym.make(id, max_turns=8, max_episode_steps=8); -1 adds no TimeLimit at all
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(
            "fiq_gym/FashionIQ-v3",
            catalog=small_catalog_path,
            max_turns=8,
            max_episode_steps=max_episode_steps,
        )
        assert env.spec.max_episode_steps == (None if max_episode_steps == -1 else max_episode_steps)
        gym.make(env.spec)  # made again from the spec it reports
    assert not [w for w in caught if "max_episode_steps" in str(w.message)]
    _, info = env.reset(seed=0)
    for turn in range(1, 9):
        _, _, terminated, truncated, info = env.step(info["shown"])  # shows the same item again
        assert terminated == (turn == 8) and truncated == (turn == 8 and max_episode_steps == 8)


def test_every_id_has_a_vector_entry_point():
    for env_id in ENV_IDS:
        assert gym.spec(env_id).vector_entry_point is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("fiq_gym/FashionIQ-v1", "fiq_gym/FashionIQ-v3"),
        ("fiq_gym/FashionIQ-v0", "fiq_gym/FashionIQ-v3"),
        ("fiq_gym:fiq_gym/FashionIQShirt-v0", "fiq_gym/FashionIQShirt-v3"),
        ("fiq_gym/FashionIQTerse100k-v1", "fiq_gym/FashionIQTerse100k-v3"),
    ],
)
def test_earlier_versions_are_not_registered_and_gymnasium_names_v3(old, new):
    assert set(SUPPORTED_ENV_IDS) == {env_id for env_id in gym.registry if env_id.startswith("fiq_gym/")}
    assert all(env_id.endswith("-v3") for env_id in ENV_IDS)
    assert {i.replace("-v3", "-v2") for i in ENV_IDS} == set(SUPPORTED_ENV_IDS) - set(ENV_IDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Gymnasium's "is out of date"
        with pytest.raises(gym.error.DeprecatedEnv, match=f"Please use `{new}`"):
            gym.make(old)
        with pytest.raises(gym.error.DeprecatedEnv, match=f"Please use `{new}`"):
            gym.make_vec(old, num_envs=2, vectorization_mode="vector_entry_point")
    assert successor_env_id(old) == new
    for other in (new, "fiq_gym/NoSuchEnv-v1", "CartPole-v1", "fiq_gym/FashionIQ-v1/greedy-shortlist-v0"):
        assert successor_env_id(other) is None


# --- semantics -----------------------------------------------------------------------------


@pytest.mark.parametrize("action_mode", ACTION_MODES)
def test_same_seed_same_rollout(make_env, action_mode):
    a = _rollout(make_env(action_mode=action_mode), seed=3)
    b = _rollout(make_env(action_mode=action_mode), seed=3)
    c = _rollout(make_env(action_mode=action_mode), seed=4)
    assert repr(a) == repr(b)
    assert repr(a) != repr(c)


def test_showing_the_target_terminates_with_rank_zero(make_env):
    env = make_env(reward="success", success_bonus=0.5)
    env.reset(seed=0, options={"target": 7, "shown": 3})
    _obs, reward, terminated, truncated, info = env.step(7)
    assert terminated and not truncated and info["is_success"]
    assert info["rank"] == 0 and info["percentile"] == 1.0
    assert reward == 5 + 0.5  # found for all 5 turns of the dialog, plus the bonus


def test_terminates_after_max_turns(make_env):
    """-v3: the dialog is over by its rules at max_turns, a termination (success is in info)."""
    env = make_env(max_turns=3)
    env.reset(seed=0, options={"target": 7, "shown": 3})
    for turn in range(1, 4):
        obs, _reward, terminated, truncated, info = env.step(10 + turn)
        assert obs["turn"][0] == turn
        assert terminated is (turn == 3) and truncated is False and not info["is_success"]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def test_repeated_index_earns_what_the_metric_counts(make_env):
    env = make_env(reward="percentile")
    env.reset(seed=0, options={"target": 7, "shown": 3})
    _, first, *_, info1 = env.step(11)
    _, again, *_, info2 = env.step(11)
    assert info2["repeated"] and again == first == info1["percentile"] == info2["percentile"]


@pytest.mark.parametrize("action_mode", ["query", "scores"])
def test_query_and_scores_never_show_an_item_twice(make_env, action_mode):
    env = make_env(action_mode=action_mode, max_turns=20)
    _, info = env.reset(seed=1)
    shown = [info["shown"]]
    action = np.full(env.action_space.shape, 0.25, dtype=np.float32)  # the same action every turn
    for _ in range(10):
        _, _, terminated, truncated, info = env.step(action)
        shown.append(info["shown"])
        if terminated or truncated:
            break
    assert len(set(shown)) == len(shown)


def test_scores_mode_shows_the_best_unseen_and_ranks_by_scores(make_env):
    env = make_env(action_mode="scores")
    env.reset(seed=0, options={"target": 5, "shown": 0})
    scores = np.linspace(-1, 1, env.num_items, dtype=np.float32)[::-1].copy()  # item 0 best
    _, _, _, _, info = env.step(scores)
    assert info["shown"] == 1  # item 0 was already shown
    assert info["rank"] == 5


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    actions=st.lists(st.integers(0, 299), min_size=1, max_size=8),
    reward=st.sampled_from(["percentile", "delta", "success", "reciprocal_rank"]),
)
def test_reward_maths(small_catalog_path, seed, actions, reward):
    env = FashionIQEnv(catalog=small_catalog_path, reward=reward, max_turns=8)
    _, info = env.reset(seed=seed)
    p0, total = info["percentile"], 0.0
    target = env._dialog.target[0]  # white-box: checks the documented rules against the truth
    for t, a in enumerate(actions, start=1):
        _, r, terminated, truncated, info = env.step(a)
        total += r
        assert 0.0 <= info["percentile"] <= 1.0
        # -v3: terminated on success or at the last turn; success is info["is_success"]
        assert info["is_success"] == (a == target) and terminated == (info["is_success"] or t == 8)
        left = 8 - t if info["is_success"] else 0
        expected = {
            "percentile": info["percentile"] + left,
            "success": float(a == target) + left,
            "reciprocal_rank": 1.0 / (1 + info["rank"]) + left,
        }
        if reward in expected:
            assert r == pytest.approx(expected[reward])
        if terminated or truncated:
            break
    if reward == "delta":
        assert total == pytest.approx(info["percentile"] - p0)


def test_nothing_in_obs_or_info_reveals_the_target(make_env):
    """Observations are a function of (caption text, shown item, turn) alone, and no info
    entry carries the target's index or id."""
    env = make_env()
    tables = env._dialog.tables
    assert set(env.observation_space.spaces) == {
        "caption",
        "caption_length",
        "shown_features",
        "shown_attributes",
        "turn",
        "history_features",
        "history_attributes",
        "history_captions",
        "history_caption_lengths",
        "history_mask",
    }
    rng = np.random.default_rng(0)
    for episode in range(15):
        target = int(rng.integers(env.num_items))
        obs, info = env.reset(seed=episode, options={"target": target})
        for _ in range(3):
            assert set(info) == {
                "caption_text",
                "shown",
                "rank",
                "percentile",
                "is_success",
                "repeated",
                "dialog_turn",
            }
            assert str(env.catalog.ids[tables.rows[target]]) not in repr(info)
            ids, length = env.tokenizer.encode_batch([info["caption_text"]], env.config.caption_length)
            np.testing.assert_array_equal(obs["caption"], ids[0])
            assert obs["caption_length"][0] == length[0] == min(len(split_words(info["caption_text"])), 32)
            np.testing.assert_array_equal(obs["shown_features"], tables.features[info["shown"]])
            np.testing.assert_array_equal(obs["shown_attributes"], tables.side_info[info["shown"]])
            action = int(rng.integers(env.num_items))
            obs, _, _terminated, _truncated, info = env.step(
                action if action != target else (target + 1) % env.num_items
            )


def test_env_pickles_and_continues_identically(make_env):
    env = make_env(action_mode="query")
    env.reset(seed=5)
    env.step(np.zeros(env.action_space.shape, np.float32))
    clone = pickle.loads(pickle.dumps(env))
    action = np.full(env.action_space.shape, 0.1, np.float32)
    assert repr(env.step(action)) == repr(clone.step(action))
    assert len(pickle.dumps(env)) < 200_000, "pickling must not copy the catalog's images"


def test_a_pickle_of_an_earlier_fiq_gym_is_refused(make_env):
    env = make_env()
    env.reset(seed=0)
    state = earlier_state(env)
    # fiq-gym 0.1.0 pickled no env_version; its config held the rules' version.
    del state["env_version"]
    config = copy.copy(state["args"]["config"])
    object.__setattr__(config, "version", 1)
    state["args"] = {**state["args"], "config": config}
    with pytest.raises(
        ValueError,
        match=r"pickled by fiq-gym 0\.1\.0, with the v1 environment, .*-v3 and -v2 ids.*fiq-gym@1aa6837",
    ):
        FashionIQEnv.__new__(FashionIQEnv).__setstate__(state)


def test_a_pickle_of_the_removed_v0_env_is_refused_with_the_fix():
    # What fiq-gym 0.1.0 wrote for a pickled FashionIQEnvV0 (protocol 2): its class, then its state.
    stream = b"\x80\x02cfiq_gym.envs.fashion_iq\nFashionIQEnvV0\nq\x00)\x81q\x01}q\x02b."
    with pytest.raises(
        ValueError, match=r"FashionIQEnvV0 is the v0 environment of fiq-gym 0\.1\.0.*-v3.*@1aa6837"
    ):
        pickle.loads(stream)


def test_close_twice(make_env):
    env = make_env()
    env.reset(seed=0)
    env.close()
    env.close()


def test_observation_keys_and_category(make_env):
    env = make_env(category="dress", observation_keys=("caption", "turn"))
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"caption", "turn"}
    dress = env.catalog.category_names.index("dress")
    assert (np.asarray(env.catalog.categories)[env._dialog.tables.rows] == dress).all()


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"action_mode": "ranking"},
            r"action_mode must be one of \['index', 'query', 'scores', 'shortlist', 'slate', 'shortlist_slate'\]",
        ),
        (
            {"reward": "rank"},
            r"reward must be one of \['percentile', 'delta', 'success', 'reciprocal_rank'\]",
        ),
        ({"side_info": "truth"}, "side_info must be 'predicted' or 'labels'"),
        ({"observation_keys": ("shown_mask", "shown_mask")}, "observation_keys must be distinct"),
        ({"max_turns": 0}, "max_turns must be an integer from 1 to 1000"),
        ({"caption_length": -1}, "caption_length must be a positive integer"),
        ({"category": "shoe"}, r"unknown category 'shoe'"),
        ({"user": "robot"}, r"user must be one of \['template', 'transformer', 'dataset', 'lm'\]"),
        ({"observation_keys": ("caption", "target")}, "observation_keys must be distinct names"),
        ({"render_mode": "human"}, r"render_mode must be one of \['rgb_array', 'ansi'\]"),
    ],
)
def test_bad_options_name_the_allowed_values(make_env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_env(**kwargs)


def test_bad_catalog_path_names_the_fix(tmp_path):
    from fiq_gym.errors import CatalogError

    with pytest.raises(CatalogError, match="does not exist.*fiq-gym catalog build"):
        FashionIQEnv(catalog=tmp_path / "missing")


@pytest.mark.parametrize(
    ("action_mode", "action", "message"),
    [
        ("index", 300, r"out of range for Discrete\(300\)"),
        ("index", -1, "out of range"),
        ("index", 2.0, "must be an integer item index"),
        ("index", np.array([1, 2]), "must be an integer item index of shape"),
        ("query", np.zeros(3, np.float32), r"must be a float array of shape \(192,\)"),
        ("query", np.full(192, np.nan, np.float32), "NaN or inf"),
        ("query", np.full(192, 2.0, np.float32), r"must lie in \[-1, 1\]"),
        ("scores", np.zeros(300, np.int64), "must be a float array"),
        ("scores", np.full(300, np.inf, np.float32), "NaN or inf"),
    ],
)
def test_bad_actions_raise_and_leave_the_episode_intact(make_env, action_mode, action, message):
    env = make_env(action_mode=action_mode)
    env.reset(seed=0)
    before = env._dialog.turn.copy()
    with pytest.raises(ValueError, match=message):
        env.step(action)
    np.testing.assert_array_equal(env._dialog.turn, before)
    env.step(env.action_space.sample())  # the episode goes on


@pytest.mark.parametrize("options", [{"target": 300}, {"shown": -1}, {"target": 1.5}, {"goal": 1}])
def test_bad_reset_options(make_env, options):
    with pytest.raises(ValueError, match="options|allowed"):
        make_env().reset(seed=0, options=options)


# --- rendering ------------------------------------------------------------------------------


def test_render_modes_and_gif(make_env, tmp_path):
    from fiq_gym.envs.rendering import save_gif

    env = make_env(render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    for a in (4, 9, 12):
        env.step(a)
        frames.append(env.render())
    assert frames[0].dtype == np.uint8 and frames[0].ndim == 3 and frames[0].shape[2] == 3
    assert not np.array_equal(frames[0], frames[1])
    gif = save_gif(frames, tmp_path / "dialog.gif")
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")

    text_env = make_env(render_mode="ansi")
    text_env.reset(seed=0)
    text_env.step(4)
    lines = text_env.render().strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("turn 1:")


def test_record_dialog_gif_wrapper(make_env, tmp_path):
    from fiq_gym.envs.wrappers import RecordDialogGif

    env = RecordDialogGif(make_env(render_mode="rgb_array", max_turns=2), tmp_path / "gifs", every=2)
    for episode in range(3):
        env.reset(seed=episode)
        for a in (5, 6):
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                break
    assert [p.name for p in env.saved] == ["dialog-episode-0.gif", "dialog-episode-2.gif"]
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        RecordDialogGif(make_env(), tmp_path)


def test_lookahead_previews_are_opt_in_and_leave_the_episode_alone(make_env):
    plain = make_env()
    plain.reset(seed=0)
    with pytest.raises(RuntimeError, match="lookahead=True"):
        plain.preview_captions([1, 2])
    env, twin = make_env(lookahead=True), make_env(lookahead=True)
    env.reset(seed=4, options={"target": 9, "shown": 2})
    twin.reset(seed=4, options={"target": 9, "shown": 2})
    ids, lengths = env.preview_captions([9, 3, 5])
    assert ids.shape == (3, 32) and lengths.shape == (3,)
    # The target itself: the shopper says it looks the same.
    assert {claim.kind for claim in env.user.parse(env.tokenizer.decode(ids[0]))} == {"same"}
    assert repr(env.step(7)) == repr(twin.step(7))
    with pytest.raises(ValueError, match="candidate indices must lie in"):
        env.preview_captions([300])


# --- observation: history, token space, side information --------------------------------


def test_history_keys_hold_the_dialog_so_far(make_env):
    env = make_env(max_turns=4, observation_keys=(*OBSERVATION_KEYS, "shown_mask"))
    tables = env.gallery
    rows, d, a, length = 5, tables.feature_dim, tables.side_info.shape[1], env.config.caption_length
    obs, _info = env.reset(seed=2, options={"target": 7, "shown": 3})
    captions, shown = [obs["caption"]], [3]
    for turn, action in enumerate([11, 12, 11], start=1):
        assert obs["history_mask"].tolist() == [1] * turn + [0] * (rows - turn)
        obs, *_ = env.step(action)
        captions.append(obs["caption"])
        shown.append(action)
        feats = obs["history_features"].reshape(rows, d)
        attrs = obs["history_attributes"].reshape(rows, a)
        ids = obs["history_captions"].reshape(rows, length)
        for t, item in enumerate(shown):
            np.testing.assert_array_equal(feats[t], tables.features[item])
            np.testing.assert_array_equal(attrs[t], tables.side_info[item])
            np.testing.assert_array_equal(ids[t], captions[t])
            assert obs["history_caption_lengths"][t] == np.count_nonzero(captions[t])
        assert not feats[turn + 1 :].any() and not ids[turn + 1 :].any() and not attrs[turn + 1 :].any()
        assert set(np.flatnonzero(obs["shown_mask"])) == set(shown)
        assert env.observation_space.contains(obs)
    obs, _ = env.reset(seed=3)
    assert obs["history_mask"].tolist() == [1, 0, 0, 0, 0] and obs["shown_mask"].sum() == 1


def test_caption_space_is_the_documented_vocabulary(make_env):
    env = make_env()
    space = env.observation_space["caption"]
    assert isinstance(space, gym.spaces.MultiDiscrete)
    assert (space.nvec == env.unwrapped.tokenizer.vocab_size).all()
    assert env.tokenizer.pad_id == 0 and env.tokenizer.words[:2] == ("<pad>", "<unk>")
    obs, info = env.reset(seed=0)
    assert env.tokenizer.decode(obs["caption"]) == " ".join(split_words(info["caption_text"])[:32])


def test_no_silent_fallbacks_on_a_catalog_without_features(small_catalog_path):
    from fiq_gym.catalog.storage import open_catalog
    from fiq_gym.gallery import _warned

    _warned.clear()
    with pytest.warns(FallbackWarning) as caught:
        env = FashionIQEnv(catalog=open_catalog(small_catalog_path))
    messages = " ".join(str(w.message) for w in caught)
    assert "thumbnails" in messages and "shown_attributes are zeros" in messages
    assert "fiq-gym features extract" in messages
    assert env.gallery.side_info_source == "none" and not env.gallery.side_info.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # once per catalog, not per env
        FashionIQEnv(catalog=small_catalog_path)
        labelled = FashionIQEnv(catalog=small_catalog_path, side_info="labels")
    assert labelled.gallery.side_info_source == "labels"
    np.testing.assert_array_equal(
        labelled.gallery.side_info, np.asarray(labelled.catalog.labels, dtype=np.float32)
    )
