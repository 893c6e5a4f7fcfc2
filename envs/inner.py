"""The fiq-gym environment under Gymnasium's wrappers, typed as such.

Agents and trainers read the items in play and the rules from ``env.unwrapped`` (its
``gallery``, ``config``, ``catalog``, ``tokenizer``...), which Gymnasium types as a bare
``Env`` or ``VectorEnv``. :func:`inner_env` is that same object with its fiq-gym type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, overload

import gymnasium as gym

if TYPE_CHECKING:
    from fiq_gym.envs.fashion_iq import FashionIQEnv
    from fiq_gym.envs.vector import FashionIQVectorEnv

__all__ = ["inner_env"]


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
