"""The random retriever: shows a random item it has not shown yet in this dialog.

The floor every learned agent must clear. It reads only what an agent may read: the
action space and ``info["shown"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["RandomAgent"]

_STREAM = 0x52414E44  # "RAND"


class RandomAgent:
    """Uniform over the items not yet shown in the current dialog (``index`` action mode)."""

    def __init__(self, action_space: gym.spaces.Space, seed: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"RandomAgent needs the 'index' action mode (a Discrete space), got {action_space}"
            )
        self.num_items = int(action_space.n)
        # A stream of its own: with a bare default_rng(seed), an agent seeded like the env
        # would draw the env's target as its first guess.
        self.rng = np.random.default_rng(None if seed is None else [_STREAM, seed])
        self._shown: set[int] = set()

    def reset(self, info: dict[str, Any]) -> None:
        """Start a dialog; ``info`` is what ``env.reset`` returned."""
        self._shown = {int(info["shown"])}

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> int:
        self._shown.add(int(info["shown"]))
        if len(self._shown) >= self.num_items:
            return int(self.rng.integers(self.num_items))
        while True:  # rejection sampling: the shown set is tiny next to the catalog
            choice = int(self.rng.integers(self.num_items))
            if choice not in self._shown:
                return choice
