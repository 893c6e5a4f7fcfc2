"""Gymnasium registration of fiq-gym's environment ids.

Entry points are strings, so registering imports nothing heavy; ``import fiq_gym`` calls
:func:`register_envs`, and ``gym.make("fiq_gym:fiq_gym/FashionIQ-v0")`` works too.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

_ENTRY = "fiq_gym.envs.fashion_iq:FashionIQEnv"
_VECTOR_ENTRY = "fiq_gym.envs.vector:FashionIQVectorEnv"

# id -> fixed keyword arguments. Names are part of the public API: keep them.
ENV_IDS: dict[str, dict] = {
    "fiq_gym/FashionIQ-v0": {},
    "fiq_gym/FashionIQDress-v0": {"category": "dress"},
    "fiq_gym/FashionIQShirt-v0": {"category": "shirt"},
    "fiq_gym/FashionIQToptee-v0": {"category": "toptee"},
}


def register_envs() -> None:
    """Register every id (idempotent: ids already registered are left alone)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        # No TimeLimit wrapper: the env truncates at max_turns itself.
        gym.register(
            id=env_id,
            entry_point=_ENTRY,
            vector_entry_point=_VECTOR_ENTRY,
            kwargs=dict(kwargs),
            disable_env_checker=False,
        )
