"""Wrappers for fiq-gym environments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.envs.rendering import save_gif

__all__ = ["RecordDialogGif"]


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

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.episode += 1
        self._frames = [self.env.render()] if self._recording() else []
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._recording():
            self._frames.append(self.env.render())
            if terminated or truncated:
                path = self.folder / f"{self.prefix}-episode-{self.episode}.gif"
                self.saved.append(save_gif(self._frames, path))
                self._frames = []
        return obs, reward, terminated, truncated, info
