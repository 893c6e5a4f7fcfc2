"""The ``-v2`` ids, kept registered so that runs, checkpoints and published tables made on them
still reproduce: the ``-v3`` environment with the end signal ``-v2`` had.

``-v3`` ends a dialog that reaches ``max_turns`` without success with ``terminated=True``
(the dialog is over by its rules). ``-v2`` reported that end as ``truncated=True`` and
``terminated=False``: libraries that bootstrap on truncation then added a value guess to every
failed dialog. Everything else (observations, actions, rewards, the shopper, ``info``) is the
same, so an agent trained on one plays the other; only what a learner reads from the two flags
differs. New work should use ``-v3``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fiq_gym.envs.fashion_iq import FashionIQEnv
from fiq_gym.envs.vector import FashionIQVectorEnv

__all__ = ["FashionIQEnvV2", "FashionIQVectorEnvV2"]


class FashionIQEnvV2(FashionIQEnv):
    """:class:`FashionIQEnv` with the ``-v2`` end signal (see the module's docstring)."""

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        success = bool(info["is_success"])
        return obs, reward, success, (terminated or truncated) and not success, info


class FashionIQVectorEnvV2(FashionIQVectorEnv):
    """:class:`FashionIQVectorEnv` with the ``-v2`` end signal (see the module's docstring)."""

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(actions)
        ended = terminated | truncated
        success = np.asarray(info["is_success"], dtype=bool) & ended
        return obs, reward, success, ended & ~success, info
