"""The native vector env: make_vec, exact agreement with single envs, autoreset, SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fiq_gym  # noqa: F401
from fiq_gym.dialog_engine import OBSERVATION_KEYS, OPTIONAL_KEYS
from fiq_gym.envs import ENV_IDS, FashionIQEnv, FashionIQVectorEnv
from fiq_gym.envs.sb3 import SB3VecEnvAdapter, make_sb3_vec_env

# The vector env's Gymnasium contract: CI runs it again on the rllib extra's Gymnasium 1.2.2.
pytestmark = pytest.mark.env_contract


def _actions(mode, n, dim, num_items, rng):
    if mode == "index":
        return rng.integers(0, num_items, size=n)
    return rng.uniform(-1, 1, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_make_vec_uses_the_native_vector_env(env_id, small_catalog_path):
    envs = gym.make_vec(
        env_id, num_envs=4, vectorization_mode="vector_entry_point", catalog=small_catalog_path
    )
    assert isinstance(envs.unwrapped, FashionIQVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    obs, reward, _terminated, _truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == (4,) and info["_rank"].all()
    envs.close()


@pytest.mark.parametrize("action_mode", ["index", "query", "scores"])
@pytest.mark.parametrize(
    ("reward", "keys"),
    [
        ("percentile", None),  # the default keys: the core keys plus the dialog history
        ("delta", None),
        ("success", OBSERVATION_KEYS + OPTIONAL_KEYS),
        ("reciprocal_rank", ("history_captions", "history_mask", "shown_mask")),
    ],
)
def test_sub_env_k_matches_a_single_env_seeded_alike(small_catalog_path, action_mode, reward, keys):
    n, seed, steps = 5, 11, 14  # long enough for several autoresets
    kwargs = {
        "catalog": small_catalog_path,
        "action_mode": action_mode,
        "reward": reward,
        "max_turns": 3,
        "observation_keys": keys,
    }
    venv = FashionIQVectorEnv(n, **kwargs)
    singles = [FashionIQEnv(**kwargs) for _ in range(n)]
    assert venv.single_observation_space == singles[0].observation_space
    rng = np.random.default_rng(0)
    dim = venv.single_action_space.shape[0] if action_mode != "index" else 0
    vobs, vinfo = venv.reset(seed=seed)
    sresults = [env.reset(seed=seed + k) for k, env in enumerate(singles)]
    for k in range(n):
        for key in sresults[k][0]:
            np.testing.assert_array_equal(vobs[key][k], sresults[k][0][key], err_msg=key)
        assert vinfo["caption_text"][k] == sresults[k][1]["caption_text"]
    needs_reset = np.zeros(n, dtype=bool)
    autoresets = 0
    for _ in range(steps):
        actions = _actions(action_mode, n, dim, venv.num_items, rng)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
        for k, env in enumerate(singles):
            if needs_reset[k]:
                obs, info = env.reset()
                rew, term, trunc = 0.0, False, False
            else:
                obs, rew, term, trunc, info = env.step(actions[k])
            for key in obs:
                np.testing.assert_array_equal(vobs[key][k], obs[key], err_msg=key)
            assert vinfo["caption_text"][k] == info["caption_text"]
            assert vinfo["rank"][k] == info["rank"]
            assert vrew[k] == pytest.approx(rew)
            assert (vterm[k], vtrunc[k]) == (term, trunc)
        autoresets += int(needs_reset.sum())
        needs_reset = vterm | vtrunc
    assert autoresets >= n, "the comparison must cover autoresets"


def test_next_step_autoreset_ignores_the_action_and_gives_zero_reward(small_catalog_path):
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path, max_turns=1)
    venv.reset(seed=0)
    _, _, term, trunc, _ = venv.step(np.array([1, 2]))
    assert (term | trunc).all()
    obs, reward, term, trunc, info = venv.step(np.array([3, 4]))
    assert (reward == 0).all() and not term.any() and not trunc.any()
    assert (obs["turn"][:, 0] == 0).all() and (info["dialog_turn"] == 0).all()


def test_reset_mask_resets_only_masked_envs(small_catalog_path):
    venv = FashionIQVectorEnv(3, catalog=small_catalog_path)
    venv.reset(seed=0)
    before, _, _, _, _ = venv.step(np.array([5, 6, 7]))
    obs, _info = venv.reset(options={"reset_mask": np.array([False, True, False])})
    assert obs["turn"][:, 0].tolist() == [1, 0, 1]
    np.testing.assert_array_equal(obs["caption"][0], before["caption"][0])
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([1, 0, 1])})


def test_fixed_episodes_through_options(small_catalog_path):
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path)
    venv.reset(seed=0, options={"target": np.array([4, 9]), "shown": np.array([1, 2])})
    _, _, term, _, info = venv.step(np.array([4, 3]))
    assert term.tolist() == [True, False] and info["is_success"].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"options\['target'\] must be 2 item indices"):
        venv.reset(options={"target": np.array([4, 900])})


def test_reset_draws_follow_the_rule_of_each_sub_env(small_catalog_path):
    """Sub-env k's reset draws a target and a first item (both always) from its own generator,
    seeded ``seed + k``; an option takes the place of its draw, and a given first item that
    equals the drawn target takes the target from the second draw instead."""
    n = 6
    venv = FashionIQVectorEnv(n, catalog=small_catalog_path, expose_target=True)
    items = venv.num_items

    def expected(seed, targets=None, shown=None):
        pairs = []
        for k in range(n):
            rng = np.random.default_rng(seed + k)
            t, s = int(rng.integers(items)), int(rng.integers(items - 1))
            if targets is not None:
                t = int(targets[k])
            elif shown is not None and t == shown[k]:
                t = s + (s >= shown[k])
            pairs.append((t, s + (s >= t) if shown is None else int(shown[k])))
        return pairs

    for seed in range(0, 200, 10):
        drawn = np.array([t for t, _ in expected(seed)])
        # Half the given first items are the targets the sub-envs would draw.
        shown = np.where(np.arange(n) % 2 == 0, drawn, (drawn + 7) % items)
        for options in ({}, {"target": (drawn + 3) % items}, {"shown": shown}):
            _, info = venv.reset(seed=seed, options=options)
            got = list(zip(info["target"].tolist(), info["shown"].tolist(), strict=True))
            assert got == expected(seed, options.get("target"), options.get("shown"))


def test_vector_bad_actions_name_the_space(small_catalog_path):
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"integer item index of shape \(2,\)"):
        venv.step(np.array([1]))
    with pytest.raises(ValueError, match="out of range"):
        venv.step(np.array([1, 300]))
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        FashionIQVectorEnv(0, catalog=small_catalog_path)


def test_vector_render(small_catalog_path):
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path, render_mode="rgb_array")
    venv.reset(seed=0)
    frames = venv.render()
    assert len(frames) == 2 and frames[0].ndim == 3


# --- Stable-Baselines3 ----------------------------------------------------------------------


def test_sb3_adapter_follows_sb3_conventions(small_catalog_path):
    vec = make_sb3_vec_env("fiq_gym/FashionIQ-v3", num_envs=3, catalog=small_catalog_path, max_turns=2)
    assert isinstance(vec, SB3VecEnvAdapter)
    vec.seed(0)
    obs = vec.reset()
    assert obs["caption"].shape == (3, 32)
    ended = 0
    for _ in range(4):
        obs, rewards, dones, infos = vec.step(np.array([1, 2, 3]))
        assert rewards.dtype == np.float32 and len(infos) == 3
        for k in np.flatnonzero(dones):
            ended += 1
            assert "terminal_observation" in infos[k] and "TimeLimit.truncated" in infos[k]
            assert obs["turn"][k, 0] == 0, "a done sub-env comes back already reset"
    assert ended >= 3


def test_sb3_adapter_passes_set_options_to_the_next_reset_only(small_catalog_path):
    vec = make_sb3_vec_env("fiq_gym/FashionIQ-v3", num_envs=3, catalog=small_catalog_path, max_turns=3)
    vec.set_options({"target": 4, "shown": 7})  # one dict: the same options for every sub-env
    vec.reset()
    assert [info["shown"] for info in vec.reset_infos] == [7, 7, 7]
    _, _, dones, infos = vec.step(np.array([4, 4, 4]))
    assert dones.all() and all(info["is_success"] for info in infos), "every target was item 4"

    vec.set_options([{"shown": 1}, {}, {"shown": 2, "target": 5}])  # a list: one per sub-env
    vec.reset()
    shown = [info["shown"] for info in vec.reset_infos]
    assert shown[0] == 1 and shown[2] == 2
    _, _, dones, infos = vec.step(np.array([0, 0, 5]))
    assert dones[2] and infos[2]["is_success"]

    vec.seed(3)
    vec.reset()  # options were used once, as in SB3's DummyVecEnv
    assert [info["shown"] for info in vec.reset_infos] != [1, vec.reset_infos[1]["shown"], 2]
    vec.set_options({"colour": "red"})
    with pytest.raises(ValueError, match=r"sub-env 0 got unknown reset options \['colour'\]"):
        vec.reset()


@pytest.mark.slow
def test_ppo_trains_on_the_adapter(small_catalog_path):
    from stable_baselines3 import PPO

    vec = make_sb3_vec_env(
        "fiq_gym/FashionIQ-v3", num_envs=4, catalog=small_catalog_path, action_mode="query"
    )
    model = PPO("MultiInputPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(vec.reset(), deterministic=True)
    assert action.shape == (4, vec.action_space.shape[0])


def test_a_reset_mask_with_nothing_to_reset_leaves_every_dialog_as_it_is():
    """The docstring's own pattern, reset(options={"reset_mask": terminated | truncated}), is
    called at steps where no dialog ended (issue 35: it crashed with a numpy error)."""
    venv = gym.make_vec("fiq_gym/FashionIQ-v3", num_envs=3, vectorization_mode="vector_entry_point")
    try:
        obs, _ = venv.reset(seed=0)
        obs, *_ = venv.step(np.zeros(3, dtype=np.int64))
        again, info = venv.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
        for key in obs:
            np.testing.assert_array_equal(again[key], obs[key])
        assert info == {}
        venv.step(np.ones(3, dtype=np.int64))  # and the dialogs go on
    finally:
        venv.close()


def test_one_observation_key_may_be_named_alone():
    """observation_keys="caption" is that key, not its seven letters (issue 35)."""
    env = gym.make("fiq_gym/FashionIQ-v3", observation_keys="caption")
    try:
        assert list(env.observation_space.spaces) == ["caption"]
    finally:
        env.close()
