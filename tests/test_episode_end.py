"""The dialog's end at max_turns is a termination on the -v3 ids (issue 37), in every loop a
library writes; the -v2 ids keep their truncation so that runs made on them reproduce."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import fiq_gym  # noqa: F401
from fiq_gym.errors import FallbackWarning

V3, V2 = "fiq_gym/FashionIQ-v3", "fiq_gym/FashionIQ-v2"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


def play_single(env, seed):
    """One dialog of unseen random items: (terminated, truncated, is_success) of each step."""
    _, info = env.reset(seed=seed)
    rng, shown, steps = np.random.default_rng(seed), {int(info["shown"])}, []
    while True:
        action = int(rng.choice([i for i in range(env.unwrapped.num_items) if i not in shown]))
        shown.add(action)
        _, _, terminated, truncated, info = env.step(action)
        steps.append((terminated, truncated, bool(info["is_success"])))
        if terminated or truncated:
            return steps


def failed_dialog(env):
    """The steps of the first seeded dialog that does not find its target."""
    for seed in range(50):
        steps = play_single(env, seed)
        if not steps[-1][2]:
            return steps
    raise AssertionError("every dialog found its target")


def test_v3_single_env_terminates_at_max_turns(small_catalog_path):
    env = gym.make(V3, catalog=small_catalog_path)
    steps = failed_dialog(env)
    assert len(steps) == 5 and all(not t and not s for t, _, s in steps[:-1])
    terminated, _, success = steps[-1]
    # The env terminates; gym.make's TimeLimit (max_episode_steps=5) adds truncated on that step.
    assert terminated and not success
    # The env itself, below the TimeLimit, terminates and does not truncate.
    raw_steps = failed_dialog(gym.make(V3, catalog=small_catalog_path).unwrapped)
    assert raw_steps[-1] == (True, False, False)


def test_v3_vector_env_terminates_at_max_turns_and_success_is_in_info(small_catalog_path):
    envs = gym.make_vec(V3, num_envs=16, vectorization_mode="vector_entry_point", catalog=small_catalog_path)
    envs.reset(seed=0)
    ended = np.zeros(16, dtype=bool)
    for turn in range(1, 6):
        _, _, terminated, truncated, info = envs.step(envs.action_space.sample())
        live = ~ended
        assert not truncated[live].any()
        if turn < 5:
            np.testing.assert_array_equal(terminated[live], info["is_success"][live])
        else:
            assert terminated[live].all()
            assert (~info["is_success"][live]).any()
        ended |= terminated
    envs.close()


def test_sb3_make_vec_env_reads_the_end_as_terminal(small_catalog_path):
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(V3, n_envs=2, seed=0, env_kwargs={"catalog": str(small_catalog_path)})
    venv.reset()
    ends = []
    for _ in range(12):
        _, _, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
        ends += [info for done, info in zip(dones, infos, strict=True) if done]
    venv.close()
    failed = [info for info in ends if not info["is_success"]]
    assert failed and not any(info["TimeLimit.truncated"] for info in failed)


def test_cleanrl_style_sync_vector_env_reports_terminations(small_catalog_path):
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(V3, catalog=str(small_catalog_path)) for _ in range(4)])
    envs.reset(seed=0)
    ended = np.zeros(4, dtype=bool)
    for _ in range(5):
        _, _, terminations, truncations, _ = envs.step(envs.action_space.sample())
        # The TimeLimit may add a truncation at turn 5, never without the termination.
        assert not (truncations & ~terminations).any()
        ended |= terminations
    assert ended.all()  # every first dialog ended by turn 5, as a termination
    envs.close()


def test_torchrl_rollout_marks_the_end_terminated(small_catalog_path):
    torchrl_envs = pytest.importorskip("torchrl.envs")
    from fiq_gym.envs.vector import FashionIQVectorEnv

    venv = FashionIQVectorEnv(
        4,
        catalog=small_catalog_path,
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        action_mode="shortlist",
        shortlist="random",
        caption_text=False,
    )
    env = torchrl_envs.GymWrapper(venv).auto_register_info_dict()
    env.set_seed(0)
    td = env.rollout(12, break_when_any_done=False)
    done, terminated = td["next", "done"][..., 0], td["next", "terminated"][..., 0]
    truncated = td["next", "truncated"][..., 0]
    assert done.any() and bool((terminated == done).all()) and not truncated.any()


def test_v2_keeps_its_truncation_and_plays_the_same_dialogs(small_catalog_path):
    from fiq_gym.agents import RandomAgent
    from fiq_gym.envs.evaluation import evaluate

    steps = failed_dialog(gym.make(V2, catalog=small_catalog_path).unwrapped)
    assert steps[-1] == (False, True, False)
    results = [
        evaluate(
            RandomAgent(gym.spaces.Discrete(300), seed=0), env_id, 128, 0, catalog=str(small_catalog_path)
        )
        for env_id in (V2, V3)
    ]
    # Exact: integer ranks from the same code and machine; only the end flag differs.
    np.testing.assert_array_equal(results[0].ranks, results[1].ranks)
    np.testing.assert_array_equal(results[0].success_turn, results[1].success_turn)
    assert (results[0].success_turn > 0).any()
