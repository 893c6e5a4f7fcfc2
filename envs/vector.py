"""``FashionIQVectorEnv``: n dialogs in one process, one batched user call and one batched
ranking per step.

Made by ``gym.make_vec(id, num_envs=n, vectorization_mode="vector_entry_point")``. Sub-env
k seeded with ``seed + k`` behaves exactly like ``FashionIQEnv`` reset with that seed: same
targets, captions, ranks and rewards.
"""

from __future__ import annotations

import os
from typing import Any, cast

import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fiq_gym.catalog.model import Catalog
from fiq_gym.dialog_engine import DialogConfig, Transition
from fiq_gym.env_config import RENDER_MODES, EnvConfig
from fiq_gym.envs.building import build_dialog
from fiq_gym.envs.registration import refuse_earlier_spec
from fiq_gym.envs.rendering import render_frame
from fiq_gym.gallery import Gallery
from fiq_gym.ranking import Ranker
from fiq_gym.shortlist import FirstStage
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User

__all__ = ["FashionIQVectorEnv"]


class FashionIQVectorEnv(VectorEnv):
    """A native batched version of :class:`~fiq_gym.envs.FashionIQEnv` (same arguments, kept
    as one :class:`~fiq_gym.env_config.EnvConfig` in ``env_config``, plus ``num_envs``,
    ``max_episode_steps``, ``autoreset_mode``, ``shards`` and ``shard_mode``).

    * Observations have the single env's keys and spaces (the dialog history included),
      batched along a leading axis of n.
    * Autoreset: ``NEXT_STEP`` (Gymnasium's default). After a sub-env terminates or
      truncates, its next ``step`` ignores the action, resets it, and returns the first
      observation of the new episode (``obs["turn"] == 0``) with reward 0. With
      ``autoreset_mode=AutoresetMode.DISABLED`` (what TorchRL's ``GymWrapper`` accepts) nothing
      resets by itself: reset ended sub-envs with ``reset(options={"reset_mask": done})``
      before stepping them again (stepping one raises ``RuntimeError``). The mode is in
      ``envs.autoreset_mode`` and ``envs.metadata["autoreset_mode"]``.
    * ``max_turns`` defaults to the registered ``max_episode_steps`` (5), which
      ``gym.make_vec`` passes in; an explicit ``max_turns`` wins.
    * ``reset(seed=s)`` seeds sub-env k with ``s + k``; a list gives one seed per sub-env.
    * ``reset(options=...)``: ``"target"`` / ``"shown"`` arrays of n item indices (indices in
      play, as the single env's; convert catalog rows with ``envs.index_of_row(rows)``) fix
      the episodes (a target equal to its first item is refused); ``"reset_mask"`` (bool array
      of n) resets only those sub-envs and returns the current observations of the others.
    * ``info`` is Gymnasium's dict of arrays, each key with its ``_key`` mask, with the single
      env's keys (``caption_text`` an object array of strings).
    * TorchRL: ``torchrl.envs.GymWrapper(FashionIQVectorEnv(n, ...,
      autoreset_mode=AutoresetMode.DISABLED))`` (docs/agents.md); it resets ended sub-envs
      with ``reset_mask`` itself. Pass ``caption_text=False`` before registering an info
      reader (its specs hold numbers only).
    * ``scoring``: as the single env's (`"float32"`, `"exact"`, `"float16"`).
    * ``shards=S`` (with ``scoring="exact"`` or `"float16"`): split the gallery over S shards
      that each count, for every dialog, their items scoring at least as well as the target
      and propose their best unseen item (:mod:`fiq_gym.ranking.sharded`); the ranks, items
      shown, observations and rewards equal the unsharded env's with the same scoring, for
      any S. ``shard_mode="process"`` (default) computes each shard in a worker process with
      one BLAS thread (a shard per core; they end with ``close()``, when the env is dropped,
      or when this process dies), ``"inline"`` one after another in this process, ``"ray"``
      each in a Ray actor of one CPU (needs Ray; the actors may run on other machines of the
      cluster this process is connected to, or a local Ray is started; they are killed on
      ``close()`` or when the env is dropped, and Ray stays up).
      ``shortlist`` mode shards the ranks; its first stage still scores every item here.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": list(RENDER_MODES)}

    def __init__(
        self,
        num_envs: int = 1,
        # EnvConfig's fields, written from fiq_gym/env_config.py by tools/spec_docs.py:
        catalog: Catalog | str | os.PathLike | None = None,
        category: str | None = None,
        user: str | User = "template",
        action_mode: str = "index",
        reward: str = "percentile",
        success_bonus: float = 0.0,
        max_turns: int | None = None,
        caption_length: int = 32,
        observation_keys: tuple[str, ...] | None = None,
        render_mode: str | None = None,
        user_kwargs: dict[str, Any] | None = None,
        tokenizer: CaptionTokenizer | None = None,
        expose_target: bool = False,
        lookahead: bool = False,
        side_info: str = "predicted",
        shortlist_size: int = 32,
        shortlist: str | FirstStage = "retriever",
        explore: float = 0.0,
        caption_text: bool = True,
        slate_size: int = 4,
        start: str = "uniform",
        start_split: str | None = None,
        split: str | None = None,
        configuration: str = "default",
        scoring: str = "float32",
        # the vector env's own:
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        shards: int | None = None,
        shard_mode: str = "process",
    ) -> None:
        if not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(
                f"autoreset_mode must be AutoresetMode.NEXT_STEP or AutoresetMode.DISABLED, got {autoreset_mode!r}"
            )
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        # gym.make_vec passes the registered max_episode_steps; an explicit max_turns wins.
        if max_turns is None:
            max_turns = 5 if max_episode_steps is None else max_episode_steps
        # Every argument above but the vector env's own (num_envs, max_episode_steps,
        # autoreset_mode, shards, shard_mode) is an EnvConfig field, as in the single env.
        config = EnvConfig.from_arguments(locals())
        self.env_config = config
        self._preview_rng = np.random.default_rng([0x9E71E3, 0])
        self.num_envs = int(num_envs)
        parts = build_dialog(config, self.num_envs, shards=shards, shard_mode=shard_mode)
        self.configuration = config.configuration
        self.catalog, self.user, self.tokenizer = parts.catalog, parts.user, parts.tokenizer
        self.first_stage, self._dialog = parts.first_stage, parts.dialog
        self.single_observation_space = self._dialog.observation_space()
        self.single_action_space = self._dialog.action_space()
        self.observation_space = cast(spaces.Dict, batch_space(self.single_observation_space, self.num_envs))
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = config.render_mode
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = False
        self._obs: dict[str, np.ndarray] = {
            k: np.zeros(space.shape or (), dtype=space.dtype)
            for k, space in self.observation_space.spaces.items()
        }
        self._last_info: dict[str, np.ndarray] | None = None

    @property
    def spec(self) -> EnvSpec | None:
        return getattr(self, "_spec", None)

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        # gym.make_vec sets the spec after building the env: close it (its shard workers, if
        # any) before refusing a recorded spec of an earlier version.
        try:
            refuse_earlier_spec(value)
        except ValueError:
            self.close()
            raise
        self._spec = value

    @property
    def config(self) -> DialogConfig:
        """The dialog rules the engine runs (``env_config.dialog_config()``, its observation
        keys resolved). ``env_config`` holds every argument of one env."""
        return self._dialog.config

    @property
    def num_items(self) -> int:
        return self._dialog.tables.num_items

    def preview_captions(self, candidates: Any) -> tuple[np.ndarray, np.ndarray]:
        """Training-only (``lookahead=True``): caption token ids (n, K, L) and lengths (n, K)
        the shopper of each sub-env would give for K candidate items each, in one batched
        user call, without changing the episodes."""
        return self._dialog.preview(np.asarray(candidates), self._preview_rng)

    @property
    def ranker(self) -> Ranker:
        """What ranks the gallery (:mod:`fiq_gym.ranking`); a sharded one lists its worker
        processes (or its Ray actors' processes) in ``worker_pids``."""
        return self._dialog.ranker

    @property
    def gallery(self) -> Gallery:
        """Read-only features and attribute scores of the items in play (no target in it)."""
        return self._dialog.tables

    def index_of_row(self, row: Any) -> Any:
        """The indices in play (what reset options take) of catalog rows; ``ValueError`` for
        a row not in play (see :class:`~fiq_gym.envs.FashionIQEnv`, Starting State)."""
        return self._dialog.tables.index_of_row(row)

    def row_of_index(self, index: Any) -> Any:
        """The catalog rows of indices in play."""
        return self._dialog.tables.row_of_index(index)

    @property
    def start_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``start="annotated"``: the (targets, shown) indices in play that resets draw from
        (copies; evaluation sets of this env are drawn from them too); None otherwise."""
        starts = self._dialog.starts
        return None if starts is None else (starts[0].copy(), starts[1].copy())

    @property
    def np_random_generators(self) -> list[np.random.Generator]:
        """The sub-envs' generators (sub-env k's randomness comes only from entry k)."""
        return self._rngs

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n = self.num_envs
        options = dict(options or {})
        unknown = set(options) - {"target", "shown", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; allowed: ['reset_mask', 'shown', 'target']"
            )
        mask = np.ones(n, dtype=bool)
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.dtype != np.bool_ or mask.shape != (n,):
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}"
                )
            if not self._started and not mask.all():
                raise RuntimeError("the first reset() must reset every sub-env (no reset_mask)")
        rows = np.flatnonzero(mask)
        if seed is not None:
            seeds = _seed_list(seed, n)
            for k in rows:
                self._rngs[k] = seeding.np_random(seeds[k])[0]
            if seeds[0] is not None:
                self._preview_rng = np.random.default_rng([0x9E71E3, int(seeds[0])])
        fixed = {}
        for key in ("target", "shown"):
            if key in options:
                values = np.asarray(options[key])
                if (
                    values.shape != (n,)
                    or values.dtype.kind not in "iu"
                    or values.min() < 0
                    or values.max() >= self.num_items
                ):
                    raise ValueError(
                        f"options[{key!r}] must be {n} item indices in [0, {self.num_items - 1}], got {values!r} "
                        "(indices in play; convert catalog rows with envs.index_of_row(rows))"
                    )
                fixed[key] = values[rows]
        if len(rows) == 0:  # nothing to reset (e.g. a reset_mask of no finished sub-env): as is
            return {k: v.copy() for k, v in self._obs.items()}, {}
        out = self._dialog.reset(rows, [self._rngs[k] for k in rows], fixed.get("target"), fixed.get("shown"))
        self._autoreset[rows] = False
        self._started = True
        self._merge(rows, out)
        return {k: v.copy() for k, v in self._obs.items()}, self._full_info(rows, out.info)

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        checked = self._dialog.check_actions(actions, batched=True)
        n = self.num_envs
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(self._autoreset).tolist()} have ended and autoreset_mode is DISABLED: "
                "reset them first with reset(options={'reset_mask': terminated | truncated})"
            )
        stepping = np.flatnonzero(~self._autoreset)
        resetting = np.flatnonzero(self._autoreset)
        if len(resetting) and len(stepping) and self._dialog.batches_restarts:
            # One shopper call for both (the same draws and ranks as the two calls below);
            # every sub-env restarts or steps, so the transition is every sub-env's, in order.
            rngs = [self._rngs[k] for k in resetting.tolist() + stepping.tolist()]
            _, out = self._dialog.restart_and_step(resetting, checked[stepping], stepping, rngs)
            return self._every_sub_env(out)
        if len(stepping) == n:
            out = self._dialog.step(checked, self._rngs, stepping)
            return self._every_sub_env(out)
        # Every sub-env restarts, or restarts and steps need apart shopper calls (a shopper
        # whose captions depend on the batch, a mode with observations of its own): each
        # part's arrays are scattered into the previous ones.
        reward = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        info: dict[str, np.ndarray] = {}
        if len(resetting):
            out = self._dialog.reset(resetting, [self._rngs[k] for k in resetting])
            self._merge(resetting, out)
            info = self._full_info(resetting, out.info, info)
        if len(stepping):
            out = self._dialog.step(checked[stepping], [self._rngs[k] for k in stepping], stepping)
            self._merge(stepping, out)
            reward[stepping], terminated[stepping], truncated[stepping] = (
                out.reward,
                out.terminated,
                out.truncated,
            )
            info = self._full_info(stepping, out.info, info)
        self._autoreset = terminated | truncated
        obs = {k: v.copy() for k, v in self._obs.items()}
        return obs, reward, terminated, truncated, info

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        if self.render_mode is None or self._last_info is None:
            return None
        info = self._last_info
        if self.render_mode == "ansi":
            return tuple(
                f'env {k} turn {info["dialog_turn"][k]}: shown {info["shown"][k]} rank {info["rank"][k]} "{self._dialog.last_caption[k]}"\n'
                for k in range(self.num_envs)
            )
        rows = self._dialog.tables.rows
        images = self.catalog.images
        return tuple(
            render_frame(
                None if images is None else np.asarray(images[rows[info["shown"][k]]]),
                self._dialog.last_caption[k],
                int(info["dialog_turn"][k]),
                self.config.max_turns,
                rank=int(info["rank"][k]),
                num_items=self.num_items,
            )
            for k in range(self.num_envs)
        )

    def close_extras(self, **kwargs: Any) -> None:
        self._last_info = None
        # An env whose constructor raised (before it had a dialog) is closed by __del__ too.
        dialog = getattr(self, "_dialog", None)
        if dialog is not None:
            dialog.ranker.close()  # ends shard processes or actors, if any

    # --- helpers ---------------------------------------------------------------------------
    def _every_sub_env(
        self, out: Transition
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """:meth:`step`'s return for a transition of every sub-env in order: its arrays are
        new (the engine's own), so they become the env's as they are (no scatter into the
        previous ones), and the caller gets copies."""
        self._obs = dict(out.observation)
        every = np.ones(self.num_envs, dtype=bool)
        info: dict[str, np.ndarray] = {}
        for key, values in out.info.items():
            info[key] = values
            info[f"_{key}"] = every.copy()
        self._last_info = {**(self._last_info or {}), **{k: v.copy() for k, v in out.info.items()}}
        self._autoreset = out.terminated | out.truncated
        obs = {k: v.copy() for k, v in self._obs.items()}
        return obs, out.reward, out.terminated, out.truncated, info

    def _merge(self, rows: np.ndarray, out: Transition) -> None:
        for k, v in out.observation.items():
            self._obs[k][rows] = v

    def _full_info(
        self,
        rows: np.ndarray,
        part: dict[str, np.ndarray],
        into: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Scatter per-row info into Gymnasium's dict-of-arrays with ``_key`` masks."""
        into = {} if into is None else into
        n = self.num_envs
        for key, values in part.items():
            if key not in into:
                into[key] = (
                    np.zeros((n, *values.shape[1:]), dtype=values.dtype)
                    if values.dtype != object
                    else np.full(n, "", dtype=object)
                )
                into[f"_{key}"] = np.zeros(n, dtype=bool)
            into[key][rows] = values
            into[f"_{key}"][rows] = True
        if self._last_info is None:
            self._last_info = {k: v.copy() for k, v in into.items() if not k.startswith("_")}
        else:
            for key in part:
                last = self._last_info.get(key)
                if last is None:
                    last = self._last_info[key] = into[key].copy()
                last[rows] = part[key]
        return into


def _seed_list(seed: Any, n: int) -> list[int | None]:
    """``reset(seed=...)`` as one seed (or None) per sub-env, with an error naming the
    argument for anything else (a float, a negative number, a list of the wrong length)."""

    def valid(s: Any) -> bool:
        return isinstance(s, int | np.integer) and not isinstance(s, bool) and bool(s >= 0)

    if valid(seed):
        return [int(seed) + k for k in range(n)]
    if (
        isinstance(seed, list | tuple | np.ndarray)
        and len(seed) == n
        and all(s is None or valid(s) for s in seed)
    ):
        return [None if s is None else int(s) for s in seed]
    raise ValueError(
        f"reset(seed=...) takes a non-negative integer (sub-env k gets seed + k), a list of {n} "
        f"such integers or None (one per sub-env), or None; got {seed!r}"
    )
