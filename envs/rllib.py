"""fiq-gym's environments for Ray RLlib (the optional extra: ``pip install -e ".[rllib]"``).

What RLlib does not get right by itself with these environments, and what this module does:

* **Registration in every runner.** A Ray env runner is a fresh process that has not imported
  ``fiq_gym``, so the plain Gymnasium id fails there. :func:`register_rllib_envs` registers
  every ``fiq_gym/...-v2`` id with RLlib's own registry (kept by the Ray cluster, so each
  runner finds it); unpickling the creator imports ``fiq_gym`` in the runner.
* **The native vector env.** With ``gym_env_vectorize_mode="vector_entry_point"`` RLlib calls
  the creator with ``num_envs`` and :func:`make_rllib_env` returns one
  :class:`~fiq_gym.envs.vector.FashionIQVectorEnv` of that many dialogs (one batched shopper
  call and ranking per step) instead of ``num_envs`` single envs stepped one by one. It checks
  that the vector env resets ended dialogs on the *next* step, which is what RLlib's
  ``SingleAgentEnvRunner`` assumes (:func:`check_autoreset_mode`).
* **No duplicated episode streams.** RLlib seeds runner ``w`` with ``seed + w`` (evaluation
  runners with another million on top), and a Gymnasium vector env seeds sub-env ``k`` with
  ``s + k``: runner 2's sub-env 0 would replay runner 1's sub-env 1. Here sub-env ``k`` of
  runner ``w`` draws from ``SeedSequence((seed, w, k))`` (:func:`runner_seeds`) when
  ``env_config["seed"]`` holds the algorithm's seed (``fiq-gym train rllib-ppo`` puts it
  there): no two (runner, sub-env) pairs share a stream, in one run or across runs of other
  seeds, and RLlib's ``sync`` and ``vector_entry_point`` modes give the same streams. Without
  it, sub-env ``k`` of the runner seeded ``s`` draws from ``SeedSequence((s, k))``: distinct
  within a run, but runs whose seeds differ by less than their runner count share streams.
* **No bootstrap at ``max_turns``.** The dialog's end at ``max_turns`` is reported as
  terminated, as the SB3 adapter does (``bootstrap_truncated=True`` in ``env_config``
  restores Gymnasium's time-limit reading).

This module needs Ray only for :func:`register_rllib_envs`; the rest is plain Gymnasium.

```python
from ray.rllib.algorithms.ppo import PPOConfig
from fiq_gym.envs.rllib import register_rllib_envs

register_rllib_envs()
config = (
    PPOConfig()
    .environment("fiq_gym/FashionIQ-v3", env_config={"action_mode": "shortlist", "seed": 0})
    .env_runners(num_env_runners=2, num_envs_per_env_runner=8, gym_env_vectorize_mode="vector_entry_point")
    .debugging(seed=0)
)
```
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

import fiq_gym  # noqa: F401  (registers the Gymnasium ids in whichever process imports this)
from fiq_gym.envs.registration import ENV_IDS

__all__ = [
    "RLLIB_INSTALL",
    "RLlibEnv",
    "RLlibVectorEnv",
    "check_autoreset_mode",
    "make_rllib_env",
    "register_rllib_envs",
    "require_ray",
    "runner_seeds",
]

#: What installs the extra (for error messages and docs).
RLLIB_INSTALL = 'pip install -e ".[rllib]"  (or: pip install "ray[rllib]>=2.60,<2.61" torch==2.13.0)'

# Stream tags: a sub-env's seed never coincides with another use of the same numbers.
_VECTOR_STREAM = 0x524C5645  # "RLVE"
_SYNC_STREAM = 0x524C5345  # "RLSE"
_RUN_STREAM = 0x524C5255  # "RLRU"


def require_ray() -> Any:
    """Import and return ``ray``, or raise ``ImportError`` naming the install command."""
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401  (RLlib, not only Ray core)
    except ImportError as e:
        raise ImportError(
            f"RLlib support needs Ray RLlib, which is not installed ({e}); install it with {RLLIB_INSTALL}"
        ) from e
    return ray


def _seed_from(*key: int) -> int:
    """A 128-bit seed from a ``SeedSequence`` of ``key`` (statistically independent per key)."""
    words = np.random.SeedSequence([int(k) for k in key]).generate_state(4, dtype=np.uint32)
    return int.from_bytes(words.astype("<u4").tobytes(), "little")


def _check_seed(value: Any, what: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def runner_seeds(seed: int, num_envs: int, worker_index: int | None = None) -> list[int]:
    """The seeds of the ``num_envs`` sub-envs of one runner. With ``worker_index``: sub-env
    ``k`` of runner ``worker_index`` of a run seeded ``seed`` gets one drawn from
    ``SeedSequence((seed, worker_index, k))``. Without: ``seed`` is the runner's own seed
    (RLlib's ``seed + worker_index``) and sub-env ``k`` draws from ``SeedSequence((seed, k))``;
    runners seeded ``seed`` and ``seed + 1`` still share no stream (``seed + k`` would)."""
    seed = _check_seed(seed, "seed")
    if worker_index is None:
        return [_seed_from(_VECTOR_STREAM, seed, k) for k in range(num_envs)]
    worker_index = _check_seed(worker_index, "worker_index")
    return [_seed_from(_RUN_STREAM, seed, worker_index, k) for k in range(num_envs)]


def check_autoreset_mode(envs: VectorEnv) -> None:
    """Raise ``ValueError`` unless ``envs`` resets ended sub-envs on the next step
    (``AutoresetMode.NEXT_STEP``), the convention RLlib's ``SingleAgentEnvRunner`` follows:
    any other mode would silently glue two dialogs into one episode."""
    mode = envs.metadata.get("autoreset_mode")
    if mode != AutoresetMode.NEXT_STEP:
        raise ValueError(
            f"RLlib's env runners need a vector env with autoreset_mode NEXT_STEP, got {mode!r}; "
            "drop autoreset_mode from env_config (NEXT_STEP is the default)"
        )


def _end_is_terminal(terminated: Any, truncated: Any) -> tuple[Any, Any]:
    """A dialog cut at ``max_turns`` is over by its rules (nothing more can be earned and
    the turn is in the observation): terminated, so RLlib's GAE bootstraps 0 instead of the
    value network's guess for a state it is never trained on (that guess paid every failed
    dialog and no successful one; docs/agents.md). The env reports it so since -v3; this also
    folds in a ``TimeLimit`` of ``gym.make`` that truncates at the same step."""
    return np.logical_or(terminated, truncated), np.zeros_like(truncated)


def _end_as_time_limit(terminated: Any, truncated: Any, success: Any) -> tuple[Any, Any]:
    """``bootstrap_truncated=True``: the -v2 reading, an end without success read as a time
    limit (kept to measure what that bootstrap does)."""
    ended = np.logical_or(terminated, truncated)
    success = np.asarray(success, dtype=bool)
    return np.logical_and(ended, success), np.logical_and(ended, ~success)


class RLlibVectorEnv(VectorWrapper):
    """The native vector env as RLlib's runners should see it.

    * ``reset(seed=s)`` (RLlib's runner seed, ``seed + w``) seeds sub-env ``k`` from
      ``SeedSequence((seed, w, k))`` when ``run_seed`` (the algorithm's ``seed``) is known,
      else from ``SeedSequence((s, k))`` (:func:`runner_seeds`), instead of ``s + k``; lists
      of seeds and ``None`` pass through.
    * The end at ``max_turns`` is reported as ``terminated`` (no bootstrap), unless
      ``bootstrap_truncated=True``.
    """

    def __init__(
        self, envs: VectorEnv, *, run_seed: int | None = None, bootstrap_truncated: bool = False
    ) -> None:
        super().__init__(envs)
        self.run_seed = None if run_seed is None else _check_seed(run_seed, "env_config['seed']")
        self.bootstrap_truncated = bool(bootstrap_truncated)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            if self.run_seed is not None and seed >= self.run_seed:
                seed = runner_seeds(self.run_seed, self.num_envs, worker_index=int(seed) - self.run_seed)
            else:
                seed = runner_seeds(int(seed), self.num_envs)
        # gymnasium types a vector env's seed as int | None; vector envs take one per sub-env too
        return self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.bootstrap_truncated:
            terminated, truncated = _end_as_time_limit(terminated, truncated, info["is_success"])
        else:
            terminated, truncated = _end_is_terminal(terminated, truncated)
        return obs, reward, terminated, truncated, info


class RLlibEnv(gym.Wrapper):
    """One env of RLlib's ``sync`` vectorization, as RLlib's runners should see it.

    * RLlib's vector env hands sub-env ``k`` of runner ``w`` the seed ``seed + w + k``. With
      ``run_seed`` (the algorithm's ``seed``) this env recovers ``k`` and draws from
      ``SeedSequence((seed, w, k))``, the stream :class:`RLlibVectorEnv` gives the same
      sub-env; without it, from ``SeedSequence((seed + w + k, w))``. Either way distinct for
      every (runner, sub-env) pair.
    * The end at ``max_turns`` is terminal, as in :class:`RLlibVectorEnv`.
    """

    def __init__(
        self,
        env: gym.Env,
        worker_index: int,
        *,
        run_seed: int | None = None,
        bootstrap_truncated: bool = False,
    ) -> None:
        super().__init__(env)
        self.worker_index = _check_seed(worker_index, "worker_index")
        self.run_seed = None if run_seed is None else _check_seed(run_seed, "env_config['seed']")
        self.bootstrap_truncated = bool(bootstrap_truncated)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            k = int(seed) - self.worker_index - (self.run_seed or 0)
            if self.run_seed is not None and k >= 0:
                seed = _seed_from(_RUN_STREAM, self.run_seed, self.worker_index, k)  # = runner_seeds(...)[k]
            else:
                seed = _seed_from(_SYNC_STREAM, seed, self.worker_index)
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.bootstrap_truncated:
            ended, success = bool(terminated or truncated), bool(info["is_success"])
            terminated, truncated = ended and success, ended and not success
        else:
            terminated, truncated = bool(terminated or truncated), False
        return obs, reward, terminated, truncated, info


def make_rllib_env(env_id: str, config: Mapping[str, Any] | None = None) -> gym.Env | VectorEnv:
    """RLlib's env creator for ``env_id``: ``config`` is RLlib's ``env_config``, the env's
    keyword arguments plus two of this module's: ``seed`` (the algorithm's seed, for streams
    keyed by (seed, runner, sub-env)) and ``bootstrap_truncated`` (default False). With
    ``num_envs`` in it (RLlib's ``vector_entry_point`` mode) the native vector env of that
    many dialogs (:class:`RLlibVectorEnv`), else one env (``sync`` mode, :class:`RLlibEnv`)."""
    kwargs = dict(config or {})
    num_envs = kwargs.pop("num_envs", None)
    run_seed = kwargs.pop("seed", None)
    bootstrap = bool(kwargs.pop("bootstrap_truncated", False))
    if num_envs is None:
        # RLlib passes an EnvContext here, which carries the runner's index.
        worker_index = int(getattr(config, "worker_index", 0) or 0)
        if "max_turns" in kwargs:  # else gym.make's TimeLimit cuts dialogs at the registered 5
            kwargs.setdefault("max_episode_steps", kwargs["max_turns"])
        return RLlibEnv(
            gym.make(env_id, **kwargs), worker_index, run_seed=run_seed, bootstrap_truncated=bootstrap
        )
    envs = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs)
    try:
        check_autoreset_mode(envs)
        return RLlibVectorEnv(envs, run_seed=run_seed, bootstrap_truncated=bootstrap)
    except ValueError:
        envs.close()
        raise


def register_rllib_envs(env_ids: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Register ``env_ids`` (default: every ``fiq_gym/...-v2`` id) with RLlib under the same
    names, so ``config.environment("fiq_gym/FashionIQ-v3", env_config={...})`` works in every
    runner of a local or remote cluster. Idempotent; returns the ids."""
    require_ray()
    from ray.tune.registry import register_env

    ids = tuple(env_ids) if env_ids is not None else tuple(ENV_IDS)
    for env_id in ids:
        gym.spec(env_id)  # an unknown id fails here, with Gymnasium's message
        register_env(env_id, functools.partial(make_rllib_env, env_id))
    return ids
