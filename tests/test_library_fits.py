"""Library-friendly shapes: a flat observation for CleanRL's SyncVectorEnv pattern and the
vector env's declared autoreset mode (TorchRL accepts NEXT_STEP-free DISABLED)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fiq_gym  # noqa: F401
from fiq_gym.envs.wrappers import FlatObservation
from fiq_gym.errors import FallbackWarning


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


def test_flat_observation_keeps_token_ids_and_has_slices(small_catalog_path):
    env = gym.make(
        "fiq_gym/FashionIQ-v1", catalog=small_catalog_path, action_mode="shortlist", shortlist="random"
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
                "fiq_gym/FashionIQ-v1",
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
    envs = gym.make_vec("fiq_gym/FashionIQ-v1", **kwargs)
    assert envs.unwrapped.autoreset_mode == AutoresetMode.NEXT_STEP
    envs = gym.make_vec("fiq_gym/FashionIQ-v1", autoreset_mode=AutoresetMode.DISABLED, max_turns=2, **kwargs)
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
        gym.make_vec("fiq_gym/FashionIQ-v1", autoreset_mode="same-step", **kwargs)
