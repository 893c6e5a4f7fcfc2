"""Evaluate a saved agent checkpoint on the env it was trained for (``fiq-gym eval``)."""

from __future__ import annotations

import os

from fiq_gym.agents.checkpoint import load_agent
from fiq_gym.envs.evaluation import evaluate
from fiq_gym.evaluation import EvaluationResult

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    episodes: int = 1000,
    seed: int = 0,
    catalog: str | None = None,
    num_envs: int = 64,
    sealed: bool = True,
) -> EvaluationResult:
    """Rebuild the training env from the checkpoint's arguments (``catalog`` overrides its
    catalog) and evaluate the agent on ``episodes`` fixed dialogs of ``seed``, sealed in
    another process unless ``sealed=False`` (debugging)."""
    loaded = load_agent(checkpoint)
    envs = loaded.make_envs(min(num_envs, episodes), catalog=catalog)
    try:
        agent = loaded.make_agent(envs)
        return evaluate(agent, envs, episodes=episodes, seed=seed, name=loaded.name, sealed=sealed)
    finally:
        envs.close()
