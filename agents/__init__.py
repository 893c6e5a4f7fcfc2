"""Retriever agents (installed as ``fiq_gym.agents``). They speak plain Gymnasium."""

from fiq_gym.agents.random_agent import RandomAgent

__all__ = ["RandomAgent"]
