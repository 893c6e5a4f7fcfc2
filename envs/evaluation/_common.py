"""What every evaluation harness shares: the env spec a process rebuilds, the time budgets,
and the rule that one evaluation of a set is open at a time in a process.

:mod:`fiq_gym.envs.evaluation.harness` (in-process and sealed) and :mod:`fiq_gym.envs.evaluation.isolation`
(the agent in its own process) both build on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from fiq_gym.envs.evaluation.sets import EvaluationSet, HeldOutSeed, refuse_training_opt_ins, training_opt_in
from fiq_gym.errors import EvaluationError

__all__ = [
    "DEFAULT_NUM_ENVS",
    "ENV_TIMEOUT",
    "START_TIMEOUT",
    "EnvSpec",
    "only_evaluation_of",
    "refuse_held_out",
    "refuse_opt_in_env",
]

DEFAULT_NUM_ENVS = 64
#: seconds the process that runs the environment may take to answer a step
ENV_TIMEOUT = 600.0
#: seconds it may take to start and build an env (a 1M-item catalog takes minutes)
START_TIMEOUT = 3600.0
_MAKE_VEC_KEYS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")


@dataclass(frozen=True)
class EnvSpec:
    """What the child builds: ``gym.make_vec(env_id, num_envs, **kwargs)``; ``payload`` is
    the pickled request, and the key under which the child keeps the env it built."""

    env_id: str
    kwargs: dict[str, Any]
    num_envs: int
    label: str
    payload: bytes

    @classmethod
    def of(cls, env: str | gym.vector.VectorEnv, num_envs: int | None, env_kwargs: dict[str, Any]) -> EnvSpec:
        if isinstance(env, str):
            refuse_training_opt_ins(env_kwargs)
            env_id, kwargs, label = env, dict(env_kwargs), env
            n = DEFAULT_NUM_ENVS if num_envs is None else int(num_envs)
        elif isinstance(env, gym.vector.VectorEnv):
            if env_kwargs:
                raise ValueError("env_kwargs only apply when env is given by id")
            refuse_opt_in_env(env)
            env_id, kwargs = _spec_of(env)
            refuse_training_opt_ins(kwargs)
            n, label = int(env.num_envs), type(env.unwrapped).__name__
        else:
            raise TypeError(
                "evaluate() takes an env id or a vector env made with gym.make_vec(..., "
                f"vectorization_mode='vector_entry_point'), got {type(env).__name__}"
            )
        try:
            payload = pickle.dumps({"env_id": env_id, "env_kwargs": kwargs, "num_envs": n})
        except Exception as e:
            raise ValueError(
                f"sealed evaluation cannot send the env's arguments to its process ({e}); "
                "pass catalog paths and user names, or evaluate(..., sealed=False) to debug"
            ) from None
        return cls(env_id, kwargs, n, label, payload)


def refuse_opt_in_env(env: Any) -> None:
    opt_in = training_opt_in(env)
    if opt_in:
        raise ValueError(
            f"evaluate() refuses an environment with {opt_in}=True: a training-only opt-in that reveals the target"
        )


def _spec_of(venv: gym.vector.VectorEnv) -> tuple[str, dict[str, Any]]:
    """The id and arguments that rebuild ``venv`` in another process."""
    spec = getattr(venv, "spec", None)
    mode = None if spec is None else spec.kwargs.get("vectorization_mode")
    if spec is None or mode not in (None, "vector_entry_point", gym.VectorizeMode.VECTOR_ENTRY_POINT):
        raise ValueError(
            "sealed evaluation rebuilds the env in another process from its spec: pass an env id with its "
            "arguments, or a vector env made by gym.make_vec(id, ..., vectorization_mode='vector_entry_point')"
        )
    return spec.id, {k: v for k, v in spec.kwargs.items() if k not in _MAKE_VEC_KEYS}


# --- one evaluation of a set at a time ------------------------------------------------------------

_open_sets: set[tuple[Any, ...]] = set()
_open_sets_lock = threading.Lock()


def _set_key(episodes: int | EvaluationSet, seed: int | HeldOutSeed) -> tuple[Any, ...]:
    """What makes two evaluation sets the same: the seed that draws it (a set drawn from a seed
    remembers it), else the targets themselves."""
    if isinstance(episodes, EvaluationSet):
        if episodes.seed is None:
            return ("targets", hashlib.sha256(episodes.targets.tobytes()).hexdigest())
        return ("seed", int(episodes.seed))
    if isinstance(seed, HeldOutSeed):
        return ("held-out", seed.fingerprint)
    return ("seed", int(seed))


@contextlib.contextmanager
def only_evaluation_of(episodes: int | EvaluationSet, seed: int | HeldOutSeed) -> Iterator[None]:
    """Refuse to start an evaluation while another of the same set is open in this process:
    an agent that evaluates inside its own ``act()`` (or from a thread it started) would read
    its targets off the nested result's ranks."""
    key = _set_key(episodes, seed)
    with _open_sets_lock:
        if key in _open_sets:
            raise EvaluationError(
                "an evaluation of this set is already open in this process: an agent may not evaluate "
                "the set it is being evaluated on (finish one evaluation before starting the next)"
            )
        _open_sets.add(key)
    try:
        yield
    finally:
        with _open_sets_lock:
            _open_sets.discard(key)


def refuse_held_out(seed: Any, mode: str) -> None:
    """A held-out seed only in an isolated evaluation: in-process, the agent could read it."""
    if isinstance(seed, HeldOutSeed):
        raise EvaluationError(
            f"a held-out set needs isolation='process' (the {mode} harness runs the agent in the process "
            "that holds the seed, where it could read it)"
        )
