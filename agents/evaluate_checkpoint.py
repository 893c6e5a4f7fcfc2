"""Evaluate a saved retriever checkpoint on the env it was trained for (``fiq-gym eval``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym

import fiq_gym  # noqa: F401
from fiq_gym.agents.retriever import RetrieverAgent, check_catalog, check_fits, load_checkpoint
from fiq_gym.evaluation import EvaluationResult, evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    episodes: int = 1000,
    seed: int = 0,
    catalog: str | None = None,
    num_envs: int = 64,
) -> EvaluationResult:
    """Rebuild the training env from the checkpoint's arguments and evaluate the agent
    (a retriever checkpoint, or a PPO checkpoint written by ``fiq-gym train ppo``)."""
    config = Path(checkpoint) / "config.json"
    if config.exists() and json.loads(config.read_text()).get("format") == "fiq-gym-ppo":
        return _evaluate_ppo(
            Path(checkpoint), episodes=episodes, seed=seed, catalog=catalog, num_envs=num_envs
        )
    net, meta, _ = load_checkpoint(checkpoint)
    envs = _training_envs(meta.get("args", {}), catalog, min(num_envs, episodes), "scores")
    try:
        inner = envs.unwrapped
        check_fits(net.config, inner.gallery, inner.tokenizer.vocab_size)
        check_catalog(meta, inner.catalog, checkpoint)
        agent = RetrieverAgent(net, inner.gallery)
        return evaluate(agent, envs, episodes=episodes, seed=seed, name=str(meta.get("agent", "retriever")))
    finally:
        envs.close()


def _evaluate_ppo(
    checkpoint: Path, *, episodes: int, seed: int, catalog: str | None, num_envs: int
) -> EvaluationResult:
    from stable_baselines3 import PPO

    from fiq_gym.agents.ppo import PPOAgent

    args = json.loads((checkpoint / "config.json").read_text()).get("args", {})
    envs = _training_envs(args, catalog, min(num_envs, episodes), "query")
    try:
        model = PPO.load(checkpoint / "model.zip", device="cpu")
        if model.observation_space != envs.unwrapped.single_observation_space:
            raise ValueError(
                "this PPO checkpoint does not fit the environment: its observation space differs "
                "(feature size, attribute count or caption vocabulary). Evaluate it on the catalog and user "
                "it was trained with, or retrain it for this env."
            )
        return evaluate(PPOAgent(model), envs, episodes=episodes, seed=seed, name="PPO")
    finally:
        envs.close()


def _training_envs(args: dict, catalog: str | None, num_envs: int, action_mode: str) -> gym.vector.VectorEnv:
    """The vector env a checkpoint's training arguments describe (``catalog`` overrides theirs)."""
    return gym.make_vec(
        args.get("env_id", "fiq_gym/FashionIQ-v0"),
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        catalog=catalog or args.get("catalog"),
        user=args.get("user", "template"),
        action_mode=action_mode,
        max_turns=args.get("max_turns", 5),
    )
