"""fiq-gym's Gymnasium environments (installed as ``fiq_gym.envs``).

The environment classes load on first access, so ``import fiq_gym`` (which registers the
ids) stays light.
"""

from __future__ import annotations

from typing import Any

from fiq_gym.envs.evaluation import _launch  # noqa: F401  (pins what evaluation children start with, first)
from fiq_gym.envs.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS", "FashionIQEnv", "FashionIQVectorEnv", "register_envs"]


def __getattr__(name: str) -> Any:
    if name == "FashionIQEnv":
        from fiq_gym.envs.fashion_iq import FashionIQEnv

        return FashionIQEnv
    if name == "FashionIQVectorEnv":
        from fiq_gym.envs.vector import FashionIQVectorEnv

        return FashionIQVectorEnv
    raise AttributeError(f"module 'fiq_gym.envs' has no attribute {name!r}")
