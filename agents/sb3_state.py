"""Acting with a trained SB3 model through the batched agent protocol, recurrent or not.

sb3-contrib's ``RecurrentPPO`` carries an LSTM state from turn to turn and must be told where a
dialog starts (``episode_start``); a feed-forward SB3 model (PPO, DQN) carries nothing.
:class:`SB3Predictor` hides the difference: :meth:`SB3Predictor.reset` marks the rows that
begin a dialog and :meth:`SB3Predictor.predict` passes the state along, so
:class:`~fiq_gym.agents.ppo.PPOAgent` and :class:`~fiq_gym.agents.shortlist.SB3ShortlistAgent`
evaluate a recurrent policy with its memory rather than silently without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SB3Predictor", "is_recurrent"]


def is_recurrent(model: Any) -> bool:
    """Whether ``model`` is a recurrent SB3 algorithm (its policy keeps an LSTM state)."""
    return hasattr(getattr(model, "policy", None), "lstm_hidden_state_shape")


class SB3Predictor:
    """Deterministic actions of an SB3 model for a batch of dialogs, with the recurrent state
    of a recurrent one kept per row and cleared where a dialog starts."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.recurrent = is_recurrent(model)
        self.state: tuple[np.ndarray, ...] | None = None
        self.starts: np.ndarray | None = None

    def reset(self, mask: np.ndarray) -> None:
        """Rows in ``mask`` begin a new dialog: their state is cleared at the next action."""
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if self.starts is None or len(self.starts) != len(mask):
            self.starts, self.state = np.ones(len(mask), dtype=bool), None  # a new batch size
        self.starts |= mask

    def predict(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        if not self.recurrent:
            action, _ = self.model.predict(observation, deterministic=True)
            return np.asarray(action)
        rows = len(next(iter(observation.values())))
        if self.starts is None or len(self.starts) != rows:
            self.starts, self.state = np.ones(rows, dtype=bool), None
        # A row at turn 0 starts a dialog whatever reset said (an env that reset it by itself).
        if "turn" in observation:
            self.starts |= np.asarray(observation["turn"]).reshape(rows) == 0
        action, self.state = self.model.predict(
            observation, state=self.state, episode_start=self.starts, deterministic=True
        )
        self.starts = np.zeros(rows, dtype=bool)
        return np.asarray(action)
