"""Slates from any scoring agent: its K best items not shown yet, for the ``slate`` action mode.

:class:`TopScoresSlateAgent` wraps an agent of the ``scores`` action mode (the supervised
retriever, policy-gradient and policy-improvement retrievers, ``RetrieverAgent``) so that it
shows its K best-scoring items each turn: the equal-budget supervised control of the slate
setting. The wrapped agent reads the observation as it would in ``scores`` mode: in ``slate``
mode the shown item and the caption are the shopper's pick and its caption, the same kind of
turn it was trained on.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["TopScoresSlateAgent"]


class TopScoresSlateAgent:
    """Shows the ``slate_size`` best-scoring items of ``agent`` that no earlier slate of the
    dialog held (ties: the lower index). Reads ``info["slate"]`` and ``info["dialog_turn"]``
    besides what ``agent`` reads.

    Args:
        agent: a batched agent whose ``act`` returns (B, N) scores (``scores`` mode).
        slate_size: K, the env's ``slate_size``.
    """

    def __init__(self, agent: Any, slate_size: int) -> None:
        if slate_size < 1:
            raise ValueError(f"slate_size must be at least 1, got {slate_size}")
        self.agent, self.slate_size = agent, int(slate_size)
        self._shown: np.ndarray | None = None  # (B, N) items of earlier slates

    @classmethod
    def for_env(cls, agent: Any, env: gym.Env | gym.vector.VectorEnv) -> TopScoresSlateAgent:
        space = getattr(env, "single_action_space", None) or env.action_space
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(
                f"TopScoresSlateAgent needs the 'slate' action mode, got the action space {space}"
            )
        return cls(agent, len(space.nvec))

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        if hasattr(self.agent, "reset"):
            self.agent.reset(observation, info, mask)
        if self._shown is not None and self._shown.shape[0] == len(mask):
            self._shown[np.asarray(mask, dtype=bool)] = False

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        scores = np.array(self.agent.act(observation, info), dtype=np.float64)
        b, n = scores.shape
        if self._shown is None or self._shown.shape != (b, n):
            self._shown = np.zeros((b, n), dtype=bool)
        turn = np.atleast_1d(info["dialog_turn"])
        self._shown[turn == 0] = False
        slates = np.atleast_2d(info["slate"])
        rows, cols = np.nonzero(slates >= 0)
        self._shown[rows, slates[rows, cols]] = True
        scores[self._shown] = -np.inf
        # a stable sort of -scores: the best first, ties to the lower index
        return np.argsort(-scores, axis=1, kind="stable")[:, : self.slate_size].astype(np.int64)
