"""TorchRL's two ways in roll out: ``GymEnv(id, num_envs=n)`` (Gymnasium's AsyncVectorEnv of
single envs) and ``GymWrapper`` over the native vector env (``autoreset_mode=DISABLED``).

torchrl is in the ``test`` extra; these tests skip only when it cannot be imported."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import fiq_gym  # noqa: F401 - registers the ids
from fiq_gym.envs.vector import FashionIQVectorEnv
from fiq_gym.errors import FallbackWarning

torchrl_envs = pytest.importorskip(
    "torchrl.envs", reason="torchrl is not installed (pip install -e '.[test]')"
)

# What the recipes in docs/agents.md pass: the shortlist, and numbers only in info (TorchRL's
# batched info reader cannot hold the caption strings). The small catalog has no shipped
# first stage, hence shortlist="random".
KWARGS = {"action_mode": "shortlist", "shortlist": "random", "caption_text": False}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        yield


@pytest.mark.slow
def test_gym_env_with_num_envs_rolls_out(small_catalog_path):
    # TorchRL starts the AsyncVectorEnv's workers with "spawn": the "fiq_gym:" prefix makes
    # gym.make import fiq_gym (which registers the ids) in each of them.
    env = torchrl_envs.GymEnv(
        "fiq_gym:fiq_gym/FashionIQ-v3", num_envs=4, catalog=str(small_catalog_path), **KWARGS
    )
    try:
        td = env.rollout(10, break_when_any_done=False)
    finally:
        env.close()
    assert td.batch_size == (4, 10)
    assert td["caption"].shape == (4, 10, 32) and td["caption"].dtype.is_floating_point is False
    assert td["candidate_features"].shape[:2] == (4, 10)
    # info keys sit beside the observation keys without replacing them
    assert td["next", "dialog_turn"].shape == (4, 10) and td["next", "turn"].shape == (4, 10, 1)
    assert td["next", "done"].any(), "5-turn dialogs end within 10 steps"
    assert np.isfinite(td["next", "reward"].numpy()).all()


def test_gym_wrapper_over_the_native_vector_env(small_catalog_path):
    venv = FashionIQVectorEnv(
        4, catalog=small_catalog_path, autoreset_mode=AutoresetMode.DISABLED, max_turns=5, **KWARGS
    )
    env = torchrl_envs.GymWrapper(venv).auto_register_info_dict()
    env.set_seed(0)
    td = env.rollout(12, break_when_any_done=False)
    assert td.batch_size == (4, 12)
    turns = td["next", "turn"][..., 0]
    done = td["next", "done"][..., 0]
    # Dialogs that are not found run 5 turns; TorchRL resets ended sub-envs through reset_mask.
    for k in range(4):
        ends = done[k].nonzero().flatten().tolist()
        start = 0
        for end in [*ends, 11]:
            assert turns[k, start : end + 1].tolist() == list(range(1, end - start + 2))
            start = end + 1
    # The one-hot action picks a candidate slot; the env shows that candidate.
    slot = td["action"].argmax(-1)
    picked = td["candidates"].gather(-1, slot[..., None])[..., 0]
    np.testing.assert_array_equal(td["next", "shown"].numpy(), picked.numpy())
