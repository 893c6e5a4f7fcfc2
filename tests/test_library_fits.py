"""Library-friendly shapes: a flat observation for CleanRL's SyncVectorEnv pattern, the vector
env's declared autoreset mode (TorchRL's GymWrapper accepts DISABLED), and info keys that
never share a name with an observation key (TorchRL puts both in one namespace)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fiq_gym  # noqa: F401
from fiq_gym.envs import FashionIQEnv, FashionIQVectorEnv
from fiq_gym.envs.evaluation import public_info
from fiq_gym.envs.sb3 import SB3VecEnvAdapter
from fiq_gym.envs.wrappers import FlatObservation
from fiq_gym.errors import FallbackWarning


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


def test_flat_observation_keeps_token_ids_and_has_slices(small_catalog_path):
    env = gym.make(
        "fiq_gym/FashionIQ-v3", catalog=small_catalog_path, action_mode="shortlist", shortlist="random"
    )
    flat = FlatObservation(env)
    obs, _ = flat.reset(seed=0)
    raw, _ = env.reset(seed=0)
    assert flat.observation_space.contains(obs) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[flat.slices["caption"]].astype(np.int64), raw["caption"])
    np.testing.assert_array_equal(obs[flat.slices["candidate_scores"]], raw["candidate_scores"])
    one_hot = FlatObservation(env, one_hot=True)
    v = env.unwrapped.tokenizer.vocab_size
    assert one_hot.observation_space.shape[0] > flat.observation_space.shape[0] + 31 * v


def test_cleanrl_sync_vector_env_pattern(small_catalog_path):
    """CleanRL's ``SyncVectorEnv([make_env(...) for i in range(n)])`` with a flat Box."""

    def make_env(seed: int):
        def thunk():
            env = gym.make(
                "fiq_gym/FashionIQ-v3",
                catalog=small_catalog_path,
                action_mode="shortlist",
                shortlist="random",
            )
            env = gym.wrappers.RecordEpisodeStatistics(FlatObservation(env))
            env.action_space.seed(seed)
            return env

        return thunk

    envs = gym.vector.SyncVectorEnv([make_env(i) for i in range(4)])
    assert isinstance(envs.single_observation_space, gym.spaces.Box)
    obs, _ = envs.reset(seed=0)
    buffer = np.zeros((8, *obs.shape), dtype=np.float32)  # CleanRL's rollout storage
    for t in range(8):
        buffer[t] = obs
        obs, _reward, _term, _trunc, _info = envs.step(envs.action_space.sample())
    assert np.isfinite(buffer).all()
    envs.close()


def test_vector_env_declares_its_autoreset_mode_and_supports_disabled(small_catalog_path):
    kwargs = {"catalog": small_catalog_path, "num_envs": 3, "vectorization_mode": "vector_entry_point"}
    envs = gym.make_vec("fiq_gym/FashionIQ-v3", **kwargs)
    assert envs.unwrapped.autoreset_mode == AutoresetMode.NEXT_STEP
    envs = gym.make_vec("fiq_gym/FashionIQ-v3", autoreset_mode=AutoresetMode.DISABLED, max_turns=2, **kwargs)
    inner = envs.unwrapped
    assert inner.autoreset_mode == inner.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    envs.reset(seed=0)
    actions = np.array([1, 2, 3])
    _, _, term, trunc, _ = envs.step(actions)
    _, _, term, trunc, _ = envs.step(actions + 3)
    done = term | trunc
    assert done.all()
    with pytest.raises(RuntimeError, match="autoreset_mode is DISABLED.*reset_mask"):
        envs.step(actions)
    obs, _ = envs.reset(options={"reset_mask": done})
    assert (obs["turn"] == 0).all()
    envs.step(actions)
    with pytest.raises(ValueError, match="autoreset_mode must be"):
        gym.make_vec("fiq_gym/FashionIQ-v3", autoreset_mode="same-step", **kwargs)


def test_info_keys_never_share_a_name_with_observation_keys(small_catalog_path):
    kwargs = {"catalog": small_catalog_path, "action_mode": "shortlist", "shortlist": "random"}
    env = FashionIQEnv(**kwargs)
    obs, info = env.reset(seed=0)
    assert {"caption_text", "dialog_turn", "shown", "candidates"} <= set(info)
    assert not set(info) & set(obs)
    obs, *_, info = env.step(0)
    assert not set(info) & set(obs)
    venv = FashionIQVectorEnv(3, **kwargs)
    obs, info = venv.reset(seed=0)
    obs, *_, info = venv.step(np.zeros(3, dtype=np.int64))
    assert not {k.lstrip("_") for k in info} & set(obs)
    adapter = SB3VecEnvAdapter(venv)
    obs = adapter.reset()
    assert not set(adapter.reset_infos[0]) & set(obs)


def test_the_old_info_names_are_gone(small_catalog_path):
    """``caption`` and ``turn`` (renamed ``caption_text`` and ``dialog_turn``) no longer read;
    an evaluated agent that asks for one is told the names it may read."""
    env = FashionIQEnv(catalog=small_catalog_path)
    _, info = env.reset(seed=0)
    with pytest.raises(KeyError):
        info["caption"]
    assert info.get("turn") is None
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path)
    _, vinfo = venv.reset(seed=0)
    with pytest.raises(KeyError, match=r"info\['turn'\] is withheld.*'dialog_turn'"):
        public_info(vinfo)["turn"]


def test_caption_text_false_leaves_the_text_out_of_info_only(small_catalog_path):
    with_text = FashionIQEnv(catalog=small_catalog_path, render_mode="ansi")
    without = FashionIQEnv(catalog=small_catalog_path, render_mode="ansi", caption_text=False)
    _, info = with_text.reset(seed=3)
    _, bare = without.reset(seed=3)
    assert "caption_text" not in bare and set(bare) == set(info) - {"caption_text"}
    assert info["caption_text"] in without.render() and without.render() == with_text.render()
    venv = FashionIQVectorEnv(2, catalog=small_catalog_path, render_mode="ansi", caption_text=False)
    _, vinfo = venv.reset(seed=3)
    assert "caption_text" not in vinfo and info["caption_text"] in venv.render()[0]
    with pytest.raises(ValueError, match="caption_text must be True or False"):
        FashionIQEnv(catalog=small_catalog_path, caption_text="no")
