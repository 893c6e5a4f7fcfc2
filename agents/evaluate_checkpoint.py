"""Evaluate a saved retriever checkpoint on the env it was trained for (``fiq-gym eval``)."""

from __future__ import annotations

import os

import gymnasium as gym

import fiq_gym  # noqa: F401
from fiq_gym.agents.retriever import RetrieverAgent, check_fits, load_checkpoint
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
    """Rebuild the training env from the checkpoint's arguments and evaluate the retriever."""
    net, meta, _ = load_checkpoint(checkpoint)
    args = meta.get("args", {})
    envs = gym.make_vec(
        args.get("env_id", "fiq_gym/FashionIQ-v0"),
        num_envs=min(num_envs, episodes),
        vectorization_mode="vector_entry_point",
        catalog=catalog or args.get("catalog"),
        user=args.get("user", "template"),
        action_mode="scores",
        max_turns=args.get("max_turns", 5),
    )
    try:
        inner = envs.unwrapped
        check_fits(net.config, inner.gallery, inner.tokenizer.vocab_size)
        agent = RetrieverAgent(net, inner.gallery)
        return evaluate(agent, envs, episodes=episodes, seed=seed, name=str(meta.get("agent", "retriever")))
    finally:
        envs.close()
