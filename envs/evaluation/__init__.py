"""Evaluation: fixed dialog sets, the harnesses that play them with an agent, their results
and paired comparisons of two agents (installed as ``fiq_gym.envs.evaluation``).

Import the public names from here (``from fiq_gym.envs.evaluation import evaluate,
EvaluationSet``); each lives in one module of the package:

* :mod:`~fiq_gym.envs.evaluation.sets`: an evaluation set (:class:`EvaluationSet`,
  :class:`HeldOutSeed`), its result and metrics (:class:`EvaluationResult`), what an evaluated
  agent may see (:func:`public_info`, the :class:`RetrievalAgent` protocol) and the dialogs
  that play a set on a vector env (:class:`EvaluationDialogs`, :func:`play_dialogs`);
* :mod:`~fiq_gym.envs.evaluation.harness`: :func:`evaluate` and :class:`SealedEvaluator`,
  the env in a child process (:mod:`~fiq_gym.envs.evaluation._env_worker`);
* :mod:`~fiq_gym.envs.evaluation.isolation`: :func:`evaluate_isolated` and
  :class:`AgentSpec`, the agent in a process of its own
  (:mod:`~fiq_gym.envs.evaluation._agent_worker`);
* :mod:`~fiq_gym.envs.evaluation.comparison`: :func:`paired_difference`,
  :func:`detectable_difference`;
* internal: what crosses between the processes (``_protocol``), what every harness shares
  (``_common``: env spec, budgets, one open evaluation per set) and how children start
  (``_launch``).

It builds environments, so it is in the envs layer. The names load on first access:
``import fiq_gym`` imports ``_launch`` (it pins what children start with, before any agent
code runs) and so this package, which then stays as light as it was.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fiq_gym.envs.evaluation.comparison import PairedDifference, detectable_difference, paired_difference
    from fiq_gym.envs.evaluation.harness import SealedDialogs, SealedEvaluator, close_warm_evaluator, evaluate
    from fiq_gym.envs.evaluation.isolation import AgentSpec, close_prestarted, evaluate_isolated, prestart
    from fiq_gym.envs.evaluation.sets import (
        HELD_OUT_VARIABLE,
        PUBLIC_INFO_KEYS,
        RECALL_KS,
        TRAINING_EVALUATION_OFFSET,
        TURN_TIMEOUT,
        EvaluationDialogs,
        EvaluationResult,
        EvaluationSet,
        HeldOutSeed,
        PublicInfo,
        RetrievalAgent,
        compare,
        dialog_turns,
        evaluate_in_process,
        human_meta,
        human_share_by_turn,
        play_dialogs,
        public_info,
        training_evaluation_seed,
    )

__all__ = [
    "HELD_OUT_VARIABLE",
    "PUBLIC_INFO_KEYS",
    "RECALL_KS",
    "TRAINING_EVALUATION_OFFSET",
    "TURN_TIMEOUT",
    "AgentSpec",
    "EvaluationDialogs",
    "EvaluationResult",
    "EvaluationSet",
    "HeldOutSeed",
    "PairedDifference",
    "PublicInfo",
    "RetrievalAgent",
    "SealedDialogs",
    "SealedEvaluator",
    "close_prestarted",
    "close_warm_evaluator",
    "compare",
    "detectable_difference",
    "dialog_turns",
    "evaluate",
    "evaluate_in_process",
    "evaluate_isolated",
    "human_meta",
    "human_share_by_turn",
    "paired_difference",
    "play_dialogs",
    "prestart",
    "public_info",
    "training_evaluation_seed",
]

#: the modules the public names live in, searched lightest first, so that a name imports no
#: more of the package than its own module needs (the harness imports all but comparison)
_HOMES = ("sets", "comparison", "isolation", "harness")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(f"{__name__}.{home}")
            if name in vars(module):
                return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
