"""The fiq-gym environment under Gymnasium's wrappers, typed as such.

Agents and trainers read the items in play and the rules from ``env.unwrapped`` (its
``gallery``, ``config``, ``catalog``, ``tokenizer``...), which Gymnasium types as a bare
``Env`` or ``VectorEnv``. :func:`inner_env` is that same object with its fiq-gym type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, overload

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from fiq_gym.envs.fashion_iq import FashionIQEnv
    from fiq_gym.envs.vector import FashionIQVectorEnv

__all__ = ["inner_env", "similar_rank", "step_outcome"]


@overload
def inner_env(env: gym.vector.VectorEnv) -> FashionIQVectorEnv: ...
@overload
def inner_env(env: gym.Env) -> FashionIQEnv: ...
@overload
def inner_env(env: gym.Env | gym.vector.VectorEnv) -> FashionIQEnv | FashionIQVectorEnv: ...
def inner_env(env: Any) -> FashionIQEnv | FashionIQVectorEnv:
    """``env.unwrapped``: a :class:`~fiq_gym.envs.FashionIQEnv` under a single env, a
    :class:`~fiq_gym.envs.FashionIQVectorEnv` under a vector env. Nothing is checked (a
    foreign env fails where a missing attribute is read, as before)."""
    return cast("FashionIQEnv | FashionIQVectorEnv", env.unwrapped)


def step_outcome(env: gym.Env, action: Any) -> tuple[int, int]:
    """What ``env.step(action)`` would show and the target's rank then, without stepping.

    The env's own rule and ranker answer (:meth:`fiq_gym.dialog_engine.DialogBatch.outcome`,
    which ``step`` plays), so an interface that must show a person the garment before the
    shopper answers (``fiq-gym play``) cannot drift from the env. It reads the target's
    rank: an agent under the sealed harness has no env object to ask.
    """
    engine = inner_env(env)._dialog
    shown, rank, _ = engine.outcome(engine.check_actions(action, batched=False))
    return int(shown[0]), int(rank[0])


def similar_rank(env: gym.Env, shown: int, target: int) -> int:
    """The target's rank when item ``shown`` is shown (the reset's rule), by the env's ranker."""
    ranker = inner_env(env)._dialog.ranker
    return 0 if shown == target else int(ranker.similar_ranks(np.array([shown]), np.array([target]))[0])
