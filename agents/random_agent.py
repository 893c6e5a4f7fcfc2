"""The random retriever: shows a random item it has not shown yet in each dialog.

The floor every learned agent must clear. It reads only what an agent may read: the
action space and ``info["shown"]``. :class:`UniformBoxAgent` is its counterpart for the
``query`` and ``scores`` action modes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["RandomAgent", "RandomSlateAgent", "UniformBoxAgent"]

_STREAM = 0x52414E44  # "RAND"
_BOX_STREAM = 0x52424F58  # "RBOX"
_SLATE_STREAM = 0x52534C54  # "RSLT"


class RandomAgent:
    """Uniform over the items not yet shown in each dialog (``index`` action mode), batched.

    Follows :class:`fiq_gym.envs.evaluation.RetrievalAgent`: ``reset`` marks new dialogs, ``act``
    returns one item index per dialog. A row whose ``info["dialog_turn"]`` is 0 inside ``act`` has
    just been auto-reset and starts a new dialog too.

    Args:
        action_space: the single-env action space (``Discrete(N)``).
        seed: seeds the agent's own stream (distinct from an env seeded with the same
            number, which would otherwise make its first guess the env's target).
    """

    def __init__(self, action_space: gym.spaces.Space, seed: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"RandomAgent needs the 'index' action mode (a Discrete space), got {action_space}"
            )
        self.num_items = int(action_space.n)
        self.rng = np.random.default_rng(None if seed is None else [_STREAM, seed])
        self._shown: list[set[int]] = []

    @classmethod
    def for_env(cls, env: gym.Env | gym.vector.VectorEnv, seed: int | None = None) -> RandomAgent:
        space = getattr(env, "single_action_space", None) or env.action_space
        return cls(space, seed)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        shown = np.atleast_1d(info["shown"])
        if len(self._shown) != len(shown):
            self._shown = [set() for _ in shown]
        for k in np.flatnonzero(mask):
            self._shown[k] = {int(shown[k])}

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        shown = np.atleast_1d(info["shown"])
        turn = np.atleast_1d(info["dialog_turn"])
        if len(self._shown) != len(shown):
            self._shown = [set() for _ in shown]
        actions = np.empty(len(shown), dtype=np.int64)
        for k in range(len(shown)):
            if turn[k] == 0:
                self._shown[k] = set()
            seen = self._shown[k]
            seen.add(int(shown[k]))
            choice = int(self.rng.integers(self.num_items))
            # Rejection sampling: a dialog's shown set is tiny next to the catalog.
            while choice in seen and len(seen) < self.num_items:
                choice = int(self.rng.integers(self.num_items))
            actions[k] = choice
        return actions


class RandomSlateAgent:
    """K distinct items not shown yet in each dialog (``slate`` action mode), batched: the
    slate setting's floor. It reads only ``info["slate"]`` (the items of the last slate, -1
    where none) and ``info["dialog_turn"]``.

    Args:
        action_space: the single-env action space (``MultiDiscrete([N] * K)``).
        seed: seeds the agent's own stream.
    """

    def __init__(self, action_space: gym.spaces.Space, seed: int | None = None) -> None:
        nvec = getattr(action_space, "nvec", None)
        if (
            not isinstance(action_space, gym.spaces.MultiDiscrete)
            or nvec is None
            or len(set(nvec.tolist())) != 1
        ):
            raise ValueError(
                f"RandomSlateAgent needs the 'slate' action mode (MultiDiscrete([N] * K)), got {action_space}"
            )
        self.num_items, self.slate_size = int(nvec[0]), len(nvec)
        self.rng = np.random.default_rng(None if seed is None else [_SLATE_STREAM, seed])
        self._shown: list[set[int]] = []

    @classmethod
    def for_env(cls, env: gym.Env | gym.vector.VectorEnv, seed: int | None = None) -> RandomSlateAgent:
        space = getattr(env, "single_action_space", None) or env.action_space
        return cls(space, seed)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        slates = np.atleast_2d(info["slate"])
        if len(self._shown) != len(slates):
            self._shown = [set() for _ in slates]
        for k in np.flatnonzero(mask):
            self._shown[k] = set()

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        slates = np.atleast_2d(info["slate"])
        turn = np.atleast_1d(info["dialog_turn"])
        if len(self._shown) != len(slates):
            self._shown = [set() for _ in slates]
        actions = np.empty((len(slates), self.slate_size), dtype=np.int64)
        for k in range(len(slates)):
            if turn[k] == 0:
                self._shown[k] = set()
            seen = self._shown[k]
            seen.update(int(i) for i in slates[k] if i >= 0)
            fresh = self.num_items - len(seen)
            if fresh >= self.slate_size:
                chosen: list[int] = []
                # Rejection sampling: a dialog's shown set is tiny next to the catalog.
                while len(chosen) < self.slate_size:
                    choice = int(self.rng.integers(self.num_items))
                    if choice not in seen and choice not in chosen:
                        chosen.append(choice)
                actions[k] = chosen
            else:  # almost every item shown: any K distinct items
                actions[k] = self.rng.choice(self.num_items, self.slate_size, replace=False)
        return actions


class UniformBoxAgent:
    """Uniform samples of a ``Box`` action space (``query`` and ``scores`` modes), batched.

    In ``scores`` mode the env then shows a uniform random item not shown yet, as
    :class:`RandomAgent` does in ``index`` mode; in ``query`` mode, the unseen item best
    aligned with a random direction.

    Args:
        action_space: the single-env action space (a ``Box``).
        seed: seeds the agent's own stream.
    """

    def __init__(self, action_space: gym.spaces.Space, seed: int | None = None) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(
                f"UniformBoxAgent needs the 'query' or 'scores' action mode (a Box space), got {action_space}"
            )
        self.space = action_space
        self.rng = np.random.default_rng(None if seed is None else [_BOX_STREAM, seed])

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        """Stateless."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        b = len(np.atleast_1d(info["shown"]))
        low, high = self.space.low, self.space.high
        return self.rng.uniform(low, high, size=(b, *self.space.shape)).astype(self.space.dtype)
