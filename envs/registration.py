"""Gymnasium registration of fiq-gym's environment ids.

Entry points are strings, so registering imports nothing heavy; ``import fiq_gym`` calls
:func:`register_envs`, and ``gym.make("fiq_gym:fiq_gym/FashionIQ-v1")`` works too.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "MAX_TURNS", "env_id_for", "register_envs"]

_ENTRY = "fiq_gym.envs.fashion_iq:FashionIQEnv"
_VECTOR_ENTRY = "fiq_gym.envs.vector:FashionIQVectorEnv"

# The default dialog length (max_turns) and the registered max_episode_steps.
MAX_TURNS = 5

_CONFIGS = {
    "FashionIQ": {},
    "FashionIQDress": {"category": "dress"},
    "FashionIQShirt": {"category": "shirt"},
    "FashionIQToptee": {"category": "toptee"},
}

# The named configurations of fiq_gym.envs.configurations (catalog and shopper settings),
# chosen from measurements (benchmarks/results/configurations.md).
_CONFIGURATION_IDS = {
    "FashionIQ100k": {"configuration": "100k"},
    "FashionIQTerse": {"configuration": "terse"},
    "FashionIQTerse100k": {"configuration": "terse-100k"},
}

# id -> fixed keyword arguments. Names are part of the public API: keep them.
ENV_IDS: dict[str, dict] = {
    f"fiq_gym/{name}-v1": kwargs for name, kwargs in {**_CONFIGS, **_CONFIGURATION_IDS}.items()
}


def register_envs() -> None:
    """Register every id (idempotent: ids already registered are left alone)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        # The env ends episodes after max_turns itself; the registered max_episode_steps
        # says so to libraries that read the spec (gym.make adds a TimeLimit of it too:
        # pass max_episode_steps with a different max_turns).
        gym.register(
            id=env_id,
            entry_point=_ENTRY,
            vector_entry_point=_VECTOR_ENTRY,
            kwargs=dict(kwargs),
            max_episode_steps=MAX_TURNS,
            disable_env_checker=False,
        )


def env_id_for(configuration: str) -> str:
    """The registered id that plays ``configuration`` (``fiq_gym/FashionIQ-v1`` for
    ``"default"``); ``ValueError`` naming the known ones otherwise."""
    if configuration == "default":
        return "fiq_gym/FashionIQ-v1"
    for env_id, kwargs in ENV_IDS.items():
        if kwargs.get("configuration") == configuration:
            return env_id
    known = ["default", *(k["configuration"] for k in ENV_IDS.values() if "configuration" in k)]
    raise ValueError(f"no registered id plays configuration {configuration!r}; registered: {known}")
