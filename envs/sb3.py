"""Stable-Baselines3 on the native vector env, without one Python env per worker.

SB3's ``VecEnv`` resets finished sub-envs within the same step and hands back the final
observation in ``info["terminal_observation"]``; Gymnasium's native env resets on the next
step instead. :class:`SB3VecEnvAdapter` bridges the two with the env's ``reset_mask``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from fiq_gym.envs.vector import FashionIQVectorEnv

__all__ = ["SB3VecEnvAdapter", "make_sb3_vec_env"]


class SB3VecEnvAdapter(VecEnv):
    """Present a :class:`FashionIQVectorEnv` as a Stable-Baselines3 ``VecEnv``.

    Per SB3's conventions: done sub-envs are reset at once, ``infos[k]`` is a dict with
    ``terminal_observation``, ``TimeLimit.truncated`` and ``is_success`` when sub-env k ends,
    and seeds set with :meth:`seed` apply at the next :meth:`reset`.

    ``TimeLimit.truncated`` is False by default: the env ends a dialog at ``max_turns`` as
    terminated (-v3), since the dialog is then over by its rules (the turn is in the
    observation, and nothing more can be earned), so the value to bootstrap is 0. Telling
    SB3 otherwise makes PPO and DQN add the value network's guess for a state it is never
    trained on to every failed dialog, a bonus that success does not get: PPO on the shortlist
    learned to avoid the target that way (docs/agents.md). ``bootstrap_truncated=True``
    restores the time-limit reading of -v2 (an end without success bootstraps).
    """

    def __init__(self, venv: FashionIQVectorEnv, *, bootstrap_truncated: bool = False) -> None:
        if not isinstance(venv, FashionIQVectorEnv):
            raise TypeError(f"SB3VecEnvAdapter wraps a FashionIQVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self.bootstrap_truncated = bootstrap_truncated
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    # --- core API --------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        seed_arg = None if all(s is None for s in seeds) else list(seeds)
        groups = self._option_groups()
        # Options all sub-envs share go with the one full reset; when they differ (SB3's
        # DummyVecEnv hands each env its own), each group of sub-envs that has options is
        # reset once more with them.
        first = groups[0][1] if len(groups) == 1 else {}
        obs, info = self.venv.reset(seed=seed_arg, options=first or None)
        self.reset_infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        for mask, options in groups if len(groups) > 1 else []:
            if not options:
                continue
            obs, extra = self.venv.reset(options={**options, "reset_mask": mask})
            for k, entry in zip(np.flatnonzero(mask), self._split_info(extra, mask), strict=True):
                self.reset_infos[k] = entry
        self._reset_seeds()
        self._reset_options()
        return obs

    def _option_groups(self) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The per-sub-env options of :meth:`set_options` as vector-env reset options: one
        (sub-env mask, options) pair per set of option keys."""
        n = self.num_envs
        groups: dict[frozenset, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        for k, options in enumerate(self._options):
            options = dict(options or {})
            unknown = set(options) - {"target", "shown"}
            if unknown:
                raise ValueError(
                    f"set_options: sub-env {k} got unknown reset options {sorted(unknown)}; allowed: ['shown', 'target']"
                )
            mask, arrays = groups.setdefault(frozenset(options), (np.zeros(n, dtype=bool), {}))
            mask[k] = True
            for key, value in options.items():
                arrays.setdefault(key, np.zeros(n, dtype=np.int64))[k] = value
        return list(groups.values())

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must be called before step_wait()")
        actions = self._actions
        space = self.venv.single_action_space
        if isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
            # SB3 may hand discrete actions as (n, 1) or float arrays; the env takes integers,
            # (n,) for one item or slot, (n, K) for a slate.
            actions = actions.astype(np.int64).reshape((self.num_envs, *tuple(space.shape or ())))
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        self._actions = None
        dones = terminated | truncated
        infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        for k in np.flatnonzero(dones):
            infos[k]["terminal_observation"] = {key: value[k].copy() for key, value in obs.items()}
            # -v3 reports the end at max_turns as terminated; bootstrap_truncated=True reads
            # an end without success as a time limit, as -v2 did
            infos[k]["TimeLimit.truncated"] = self.bootstrap_truncated and not bool(info["is_success"][k])
        if dones.any():
            obs, reset_info = self.venv.reset(options={"reset_mask": dones})
            for k, extra in zip(np.flatnonzero(dones), self._split_info(reset_info, dones), strict=False):
                self.reset_infos[k] = extra
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # --- attribute plumbing (one shared env, so every index sees the same object) -----------
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        method = getattr(self.venv, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render() if self.venv.render_mode == "rgb_array" else None
        if frames is None:
            return [None] * self.num_envs
        return list(cast("tuple[np.ndarray, ...]", frames))  # "rgb_array": an array per sub-env

    # --- helpers ---------------------------------------------------------------------------
    def _split_info(self, info: dict[str, np.ndarray], rows: np.ndarray) -> list[dict[str, Any]]:
        """Gymnasium's dict of arrays -> SB3's list of per-env dicts (only ``rows``)."""
        out: list[dict[str, Any]] = []
        keys: Iterable[str] = [k for k in info if not k.startswith("_")]
        for k in np.flatnonzero(rows):
            entry: dict[str, Any] = {}
            for key in keys:
                mask = info.get(f"_{key}")
                if mask is None or mask[k]:
                    value = info[key][k]
                    entry[key] = value.item() if isinstance(value, np.generic) else value
            out.append(entry)
        return out


def make_sb3_vec_env(
    env_id: str = "fiq_gym/FashionIQ-v3",
    num_envs: int = 8,
    *,
    bootstrap_truncated: bool = False,
    **kwargs: Any,
) -> SB3VecEnvAdapter:
    """``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point")`` for SB3
    (``bootstrap_truncated``: see :class:`SB3VecEnvAdapter`)."""
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    inner = venv.unwrapped if hasattr(venv, "unwrapped") else venv
    if not isinstance(inner, FashionIQVectorEnv):  # pragma: no cover - defensive
        raise TypeError(f"{env_id} did not make a FashionIQVectorEnv")
    return SB3VecEnvAdapter(inner, bootstrap_truncated=bootstrap_truncated)
