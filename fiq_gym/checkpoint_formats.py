"""The ``format`` strings of agent checkpoints' ``config.json``: one place, importing nothing.

A checkpoint's ``format`` says which trainer wrote it and so how
:func:`fiq_gym.agents.loading.load_agent` reads it. The strings are part of the on-disk
layout: a checkpoint written by any earlier fiq-gym still carries them, so they never change.
The agent registry (:mod:`fiq_gym.agents.registry`) names each agent's format from here, and
importing this module costs nothing (the command line lists agents without loading torch).
"""

from __future__ import annotations

__all__ = [
    "BEHAVIOUR_CLONING_FORMAT",
    "CLEANRL_PPO_FORMAT",
    "DQN_FORMAT",
    "PPO_FORMAT",
    "RECURRENT_REINFORCE_FORMAT",
    "RETRIEVER_FORMAT",
    "RLLIB_PPO_FORMAT",
]

#: dialog retrievers (:class:`fiq_gym.retriever.RetrieverNet`): ``fiq-gym train supervised``,
#: ``policy-gradient``, ``policy-improvement`` and ``single-shot``
RETRIEVER_FORMAT = "fiq-gym-retriever"
#: Stable-Baselines3 agents (SB3's own ``model.zip`` beside ``config.json``)
PPO_FORMAT = "fiq-gym-ppo"
DQN_FORMAT = "fiq-gym-dqn"
#: ``fiq-gym train rllib-ppo`` (RLlib's algorithm checkpoint beside ``config.json``)
RLLIB_PPO_FORMAT = "fiq-gym-rllib-ppo"
#: the single-file trainers' torch policies (:func:`fiq_gym.checkpoint.save_policy`:
#: ``model.safetensors`` beside ``config.json``): ``fiq-gym train cleanrl-ppo-shortlist``,
#: ``recurrent-reinforce`` and ``behaviour-cloning``
CLEANRL_PPO_FORMAT = "fiq-gym-cleanrl-ppo-shortlist"
RECURRENT_REINFORCE_FORMAT = "fiq-gym-recurrent-reinforce"
BEHAVIOUR_CLONING_FORMAT = "fiq-gym-behaviour-cloning"
