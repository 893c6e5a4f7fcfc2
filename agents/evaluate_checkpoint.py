"""Evaluate a saved agent checkpoint on the env it was trained for (``fiq-gym eval``).

Isolated (``isolation="process"``, what ``fiq-gym eval`` does by default), this process reads
only the checkpoint's settings, to build the env; the model is loaded in the agent's own
process by :func:`agent_from_checkpoint`, so a checkpoint you did not write never runs its
loading code next to the evaluation set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym

from fiq_gym.agents.loading import load_agent
from fiq_gym.envs.evaluation import (
    TURN_TIMEOUT,
    AgentSpec,
    EvaluationResult,
    HeldOutSeed,
    RetrievalAgent,
    evaluate,
)

__all__ = ["agent_from_checkpoint", "evaluate_checkpoint"]


def agent_from_checkpoint(venv: gym.vector.VectorEnv, checkpoint: str) -> RetrievalAgent:
    """The agent factory of an isolated evaluation: the checkpoint's agent for ``venv``."""
    return load_agent(checkpoint).make_agent(venv)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    episodes: int = 1000,
    seed: int | HeldOutSeed = 0,
    catalog: str | None = None,
    num_envs: int = 64,
    sealed: bool = True,
    isolation: str | None = None,
    turn_timeout: float | None = TURN_TIMEOUT,
    start: str | None = None,
    start_split: str | None = None,
) -> EvaluationResult:
    """Rebuild the training env from the checkpoint's arguments (``catalog`` overrides its
    catalog, ``start`` and ``start_split`` its start, e.g. ``start_split="val"`` to evaluate
    an agent trained from annotated train pairs on the val pairs) and evaluate the agent on
    ``episodes`` fixed dialogs of ``seed``.

    ``isolation``: ``"sealed"`` (the default here, ``sealed=False`` for ``"none"``) or
    ``"process"``: the agent loaded and run in a process of its own (needed for a
    :class:`~fiq_gym.envs.evaluation.HeldOutSeed`); see :func:`fiq_gym.envs.evaluation.evaluate`."""
    mode = isolation or ("sealed" if sealed else "none")
    overrides: dict[str, Any] = {
        k: v for k, v in (("start", start), ("start_split", start_split)) if v is not None
    }
    n = min(num_envs, episodes if isinstance(episodes, int) else len(episodes))
    if mode == "process":
        path = Path(checkpoint).expanduser().resolve()
        settings = load_agent(path, load_model=False)
        if catalog is not None:
            catalog = str(Path(catalog).expanduser().resolve())
        env_kwargs: dict[str, Any] = settings.env_kwargs(catalog=catalog, **overrides)
        _check_start(overrides, env_kwargs)
        spec = AgentSpec(
            "fiq_gym.agents.evaluate_checkpoint:agent_from_checkpoint",
            {"checkpoint": str(path)},
            settings.name,
        )
        return evaluate(
            spec,
            settings.env_id,
            episodes,
            seed,
            isolation="process",
            num_envs=n,
            turn_timeout=turn_timeout,
            **env_kwargs,
        )
    loaded = load_agent(checkpoint)
    _check_start(overrides, loaded.env_kwargs(catalog=catalog, **overrides))
    envs = loaded.make_envs(n, catalog=catalog, **overrides)
    try:
        agent = loaded.make_agent(envs)
        return evaluate(
            agent,
            envs,
            episodes=episodes,
            seed=seed,
            name=loaded.name,
            isolation=mode,
            turn_timeout=turn_timeout,
        )
    finally:
        envs.close()


def _check_start(overrides: dict[str, Any], env_kwargs: dict[str, Any]) -> None:
    """A start split given for a uniform start would be ignored: say so rather than evaluate
    on dialogs the caller did not ask for."""
    if "start_split" in overrides and env_kwargs.get("start", "uniform") == "uniform":
        raise ValueError(
            "--start-split applies to annotated starts, and this evaluation starts uniformly: "
            "add --start annotated (start='annotated')"
        )
