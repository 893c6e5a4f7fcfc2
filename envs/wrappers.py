"""Wrappers for fiq-gym environments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, SupportsFloat, cast

import gymnasium as gym
import numpy as np

from fiq_gym.envs.rendering import save_gif

__all__ = ["FlatObservation", "RecordDialogGif"]


class RecordDialogGif(gym.Wrapper):
    """Save every ``every``-th episode as an animated GIF (one frame per turn).

    The wrapped env must use ``render_mode="rgb_array"``. Files are named
    ``{prefix}-episode-{k}.gif`` in ``folder`` and written atomically when the episode ends.
    """

    def __init__(
        self, env: gym.Env, folder: str | os.PathLike, *, every: int = 1, prefix: str = "dialog"
    ) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"RecordDialogGif needs render_mode='rgb_array', the env has {env.render_mode!r}"
            )
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        self.folder, self.every, self.prefix = Path(folder), every, prefix
        self.episode = -1
        self.saved: list[Path] = []
        self._frames: list[np.ndarray] = []

    def _recording(self) -> bool:
        return self.episode % self.every == 0

    def _frame(self) -> np.ndarray:
        return cast(np.ndarray, self.env.render())  # render_mode="rgb_array", checked on creation

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.episode += 1
        self._frames = [self._frame()] if self._recording() else []
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._recording():
            self._frames.append(self._frame())
            if terminated or truncated:
                path = self.folder / f"{self.prefix}-episode-{self.episode}.gif"
                self.saved.append(save_gif(self._frames, path))
                self._frames = []
        return obs, reward, terminated, truncated, info


class FlatObservation(gym.ObservationWrapper):
    """One flat ``float32`` ``Box`` observation for CleanRL-style code that expects arrays.

    The ``Dict`` keys are concatenated in the order of the observation space.
    ``MultiDiscrete`` keys (caption token ids) stay token ids (as floats holding integers, so
    ``obs[..., wrapper.slices["caption"]].long()`` feeds an embedding) unless
    ``one_hot=True``, which expands them to one-hot vectors as ``gymnasium.spaces.flatten``
    does. ``slices[key]`` says where each key lies in the flat vector.

    ```python
    envs = gym.vector.SyncVectorEnv(
        [lambda: FlatObservation(gym.make("fiq_gym/FashionIQ-v3", action_mode="shortlist"))] * 4
    )
    ```
    """

    def __init__(self, env: gym.Env, *, one_hot: bool = False) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"FlatObservation needs a Dict observation space, got {space}")
        self.one_hot = one_hot
        self.slices: dict[str, slice] = {}
        lows, highs, start = [], [], 0
        for key, sub in space.spaces.items():
            if isinstance(sub, gym.spaces.MultiDiscrete) and not one_hot:
                low, high = np.zeros(sub.shape, np.float32), (sub.nvec - 1).astype(np.float32).reshape(-1)
            elif isinstance(sub, gym.spaces.MultiDiscrete | gym.spaces.MultiBinary | gym.spaces.Discrete):
                size = gym.spaces.flatdim(sub)
                low, high = np.zeros(size, np.float32), np.ones(size, np.float32)
            elif isinstance(sub, gym.spaces.Box):
                low, high = sub.low.astype(np.float32).reshape(-1), sub.high.astype(np.float32).reshape(-1)
            else:
                raise ValueError(f"FlatObservation cannot flatten key {key!r} of space {sub}")
            low, high = np.asarray(low).reshape(-1), np.asarray(high).reshape(-1)
            self.slices[key] = slice(start, start + low.size)
            start += low.size
            lows.append(low)
            highs.append(high)
        self.observation_space = gym.spaces.Box(np.concatenate(lows), np.concatenate(highs), dtype=np.float32)

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        space = cast(gym.spaces.Dict, self.env.observation_space)  # checked on creation
        parts = []
        for key, sub in space.spaces.items():
            value = observation[key]
            if (isinstance(sub, gym.spaces.MultiDiscrete) and not self.one_hot) or isinstance(
                sub, gym.spaces.Box
            ):
                parts.append(np.asarray(value, np.float32).reshape(-1))
            else:
                # flatten gives an array for these spaces (a dict or tuple only for Dict and Tuple)
                parts.append(cast(np.ndarray, gym.spaces.flatten(sub, value)).astype(np.float32))
        return np.concatenate(parts)
