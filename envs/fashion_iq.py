"""``FashionIQEnv``: one dialog-based image retrieval episode at a time."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.dialog import OBSERVATION_KEYS, DialogBatch, DialogConfig, Transition
from fiq_gym.envs.building import build_dialog_parts
from fiq_gym.envs.rendering import render_frame
from fiq_gym.retrieval import RetrievalTables
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User

__all__ = ["FashionIQEnv"]


class FashionIQEnv(gym.Env[dict[str, np.ndarray], Any]):
    """Dialog-based interactive image retrieval over a garment catalog.

    ## Description

    A simulated shopper has a *target* garment in mind. Each turn the agent shows one garment
    of the catalog; the shopper answers with a *relative caption* that says how the target
    differs from what was shown ("is darker and has longer sleeves"). The agent reads the
    caption and shows another garment. The task follows Fashion IQ (Wu et al., CVPR 2021)
    and "Dialog-based Interactive Image Retrieval" (Guo et al., NeurIPS 2018).

    ## Action Space

    Set by ``action_mode``:

    | mode       | space                       | meaning                                          |
    |------------|-----------------------------|--------------------------------------------------|
    | `"index"`  | `Discrete(N)`               | the item to show next                            |
    | `"query"`  | `Box(-1, 1, (D,), float32)` | a query in feature space; items are scored by    |
    |            |                             | their dot product with it (cosine up to scale)   |
    | `"scores"` | `Box(-1, 1, (N,), float32)` | the agent's own score for every item             |

    N is the number of items in play (the chosen category), D the feature size. In `query`
    and `scores` modes the env shows the best-scoring item *not yet shown* in the episode
    (ties: the lowest index). In `index` mode the agent may show an item again; that turn
    earns nothing new (see Rewards). Malformed actions (wrong shape or dtype, out of range,
    NaN or inf) raise ``ValueError`` naming the space and the value.

    ## Observation Space

    A `Dict` of fixed-shape `Box`es (keys selectable with ``observation_keys``):

    | key                | shape     | dtype   | meaning                                         |
    |--------------------|-----------|---------|-------------------------------------------------|
    | `caption`          | `(L,)`    | int64   | caption token ids, padded with 0                |
    | `caption_length`   | `(1,)`    | int64   | number of real tokens (<= L)                    |
    | `shown_features`   | `(D,)`    | float32 | unit-norm features of the shown item            |
    | `shown_attributes` | `(A,)`    | float32 | attribute scores of the shown item (side info)  |
    | `turn`             | `(1,)`    | int64   | turns taken so far, 0 after reset               |

    L is ``caption_length``. Features are the catalog's (centred, unit-norm); a catalog
    without features uses 8x8 colour thumbnails. Attribute scores are the catalog's predicted
    ones, or, on catalogs without predictions, its labels. Token ids come from the user's
    tokenizer (a word vocabulary for the template shopper): the observation does not depend
    on which.

    `info` holds `caption` (text), `shown` (index), `rank`, `percentile`, `is_success`,
    `repeated` and `turn`; never the target's index or id, unless the training-only
    ``expose_target=True`` opt-in adds `info["target"]` (for supervised losses; the
    evaluation harness refuses such an env).

    Agents may read the gallery they retrieve from, never the target: ``env.unwrapped.gallery``
    holds the read-only features and attribute scores of every item in play (a retrieval
    system knows its own catalog).

    ## Rewards

    The target's **rank** is its 0-based position among all N items in play: by the agent's
    scores (`query`, `scores`) or by cosine similarity to the shown item (`index`, and at
    reset). Ties count against the agent: every other item scoring at least as high as the
    target comes first. When the target is shown, the rank is 0. The **percentile** is
    ``p_t = 1 - rank_t / (N - 1)``. With ``reward=``:

    * `"percentile"`: ``r_t = p_t`` (0 for a repeated `index` action);
    * `"delta"`: ``r_t = p_t - p_{t-1}``, where ``p_0`` is the reset's percentile, so an
      episode's rewards sum to ``p_T - p_0``;
    * `"success"`: ``r_t = 1`` when the target is shown, else 0;

    plus ``success_bonus`` when the target is shown.

    ## Starting State

    A target and a different first item, both uniform over the items in play, drawn from
    ``self.np_random``; ``reset(options={"target": i, "shown": j})`` fixes either (indices in
    play), as an evaluation set does. The first observation holds the caption for that pair.

    ## Episode End

    * Termination: the target is shown (`info["is_success"]`).
    * Truncation: after ``max_turns`` steps (5 by default, as in both papers).

    ## Arguments

    ```python
    gym.make("fiq_gym/FashionIQ-v0", catalog=None, category=None, user="template",
             action_mode="index", reward="percentile", success_bonus=0.0, max_turns=5,
             caption_length=32, observation_keys=None, render_mode=None,
             user_kwargs=None, tokenizer=None, expose_target=False, lookahead=False)
    ```

    * ``catalog``: a catalog directory, a :class:`~fiq_gym.catalog.Catalog`, or None for
      the default synthetic catalog (built on first use into the cache).
    * ``category``: `"dress"`, `"shirt"`, `"toptee"` (or the catalog's own), None for all.
    * ``user``: `"template"` (rule-based shopper), `"transformer"` (the learned relative
      captioner, :class:`~fiq_gym.users.TransformerUser`) or a
      :class:`~fiq_gym.users.User` instance. ``user_kwargs`` go to the named shopper:
      template, e.g. ``{"noise": TemplateNoise(omit=0.2)}``; transformer,
      ``{"checkpoint": DIR, "decoding": {"strategy": "greedy"}}`` (defaults: the checkpoint
      shipped with the package, nucleus sampling; a checkpoint that does not fit the catalog
      fails with a message naming the mismatch). Caption token ids then come from the
      transformer's own word tokenizer; `"transformer:DIR"` is short for a transformer with
      ``{"checkpoint": DIR}``. `"dataset"` replays the human captions of a catalog
      imported with ``fiq-gym catalog import`` (:class:`~fiq_gym.users.DatasetUser`;
      ``user_kwargs``: ``split``, ``mode`` `"random"` | `"joined"`, ``fallback``
      `"template"` | `"transformer"` | None, where None raises on pairs nobody annotated).
    * ``action_mode``, ``reward``, ``success_bonus``, ``max_turns``: see above.
    * ``caption_length``: L, the number of token ids in the caption observation.
    * ``observation_keys``: the subset of observation keys to return (default: all).
    * ``render_mode``: `"rgb_array"` (the shown garment, the caption and the turn) or
      `"ansi"` (a text line per turn).
    * ``tokenizer``: a :class:`~fiq_gym.text.CaptionTokenizer` to use instead of the user's.
    * ``expose_target``: training-only opt-in that adds `info["target"]`; off by default.
    * ``lookahead``: training-only opt-in that enables ``preview_captions(candidates)``,
      what the shopper would say about candidate items (for model-based policy
      improvement); off by default. Previews draw from their own generator and never
      change the episode.

    ## Registered Configurations

    * `fiq_gym/FashionIQ-v0`: all categories.
    * `fiq_gym/FashionIQDress-v0`, `fiq_gym/FashionIQShirt-v0`,
      `fiq_gym/FashionIQToptee-v0`: one category each.

    ## Version History

    * v0: initial release.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 1}

    def __init__(
        self,
        catalog: Catalog | str | os.PathLike | None = None,
        category: str | None = None,
        user: str | User = "template",
        action_mode: str = "index",
        reward: str = "percentile",
        success_bonus: float = 0.0,
        max_turns: int = 5,
        caption_length: int = 32,
        observation_keys: tuple[str, ...] | None = None,
        render_mode: str | None = None,
        user_kwargs: dict[str, Any] | None = None,
        tokenizer: CaptionTokenizer | None = None,
        expose_target: bool = False,
        lookahead: bool = False,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        config = DialogConfig(
            action_mode=action_mode,
            reward=reward,
            success_bonus=success_bonus,
            max_turns=max_turns,
            caption_length=caption_length,
            observation_keys=tuple(observation_keys) if observation_keys is not None else OBSERVATION_KEYS,
            expose_target=bool(expose_target),
            lookahead=bool(lookahead),
        )
        self._preview_rng = np.random.default_rng([0x9E71E3, 0])
        self._args = {
            "catalog": catalog,
            "category": category,
            "user": user,
            "user_kwargs": user_kwargs,
            "tokenizer": tokenizer,
            "config": config,
        }
        self.catalog, tables, self.user, self.tokenizer = build_dialog_parts(
            catalog, category, user, user_kwargs, tokenizer
        )
        self.category = category
        self._dialog = DialogBatch(tables, self.user, self.tokenizer, config, num_dialogs=1)
        self.observation_space = self._dialog.observation_space()
        self.action_space = self._dialog.action_space()
        self.render_mode = render_mode
        self._needs_reset = True
        self._last: dict[str, Any] | None = None
        self._log: list[str] = []

    @property
    def config(self) -> DialogConfig:
        return self._dialog.config

    @property
    def num_items(self) -> int:
        """Items in play (the size of the index action space)."""
        return self._dialog.tables.num_items

    def preview_captions(self, candidates: Any) -> tuple[np.ndarray, np.ndarray]:
        """Training-only (``lookahead=True``): the caption token ids (K, L) and lengths (K,)
        the shopper would give for each of K candidate items, without changing the episode."""
        ids, lengths = self._dialog.preview(np.asarray(candidates)[None], self._preview_rng)
        return ids[0], lengths[0]

    @property
    def gallery(self) -> RetrievalTables:
        """Read-only features and attribute scores of the items in play (no target in it)."""
        return self._dialog.tables

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._preview_rng = np.random.default_rng([0x9E71E3, seed])
        targets = shown = None
        if options:
            unknown = set(options) - {"target", "shown"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['target', 'shown']")
            n = self.num_items
            for key in ("target", "shown"):
                if key in options:
                    value = options[key]
                    if (
                        isinstance(value, bool)
                        or not isinstance(value, int | np.integer)
                        or not 0 <= value < n
                    ):
                        raise ValueError(
                            f"options[{key!r}] must be an item index in [0, {n - 1}], got {value!r}"
                        )
            if "target" in options:
                targets = np.array([options["target"]])
            if "shown" in options:
                shown = np.array([options["shown"]])
        out = self._dialog.reset(np.array([0]), [self.np_random], targets, shown)
        self._needs_reset = False
        self._log = []
        obs, info = self._unbatch(out)
        self._remember(info)
        return obs, info

    def step(self, action: Any):
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        actions = self._dialog.check_actions(action, batched=False)
        out = self._dialog.step(actions, [self.np_random])
        obs, info = self._unbatch(out)
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        self._needs_reset = terminated or truncated
        self._remember(info)
        return obs, float(out.reward[0]), terminated, truncated, info

    def render(self):
        if self.render_mode is None or self._last is None:
            return None
        if self.render_mode == "ansi":
            return "\n".join(self._log) + "\n"
        row = int(self._dialog.tables.rows[self._last["shown"]])
        image = None if self.catalog.images is None else np.asarray(self.catalog.images[row])
        return render_frame(
            image,
            self._last["caption"],
            self._last["turn"],
            self.config.max_turns,
            rank=self._last["rank"],
            num_items=self.num_items,
        )

    def close(self) -> None:
        # Nothing to release: catalogs are memory maps shared with other environments.
        self._last = None

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _unbatch(out: Transition) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs = {k: v[0] for k, v in out.observation.items()}
        info: dict[str, Any] = {}
        for k, v in out.info.items():
            x = v[0]
            info[k] = x.item() if isinstance(x, np.generic) else x
        return obs, info

    def _remember(self, info: dict[str, Any]) -> None:
        self._last = info
        flag = " SUCCESS" if info["is_success"] else ""
        self._log.append(
            f"turn {info['turn']}: shown {info['shown']:>6}  rank {info['rank']:>6}/{self.num_items - 1}  "
            f'p={info["percentile"]:.3f}{flag}  "{info["caption"]}"'
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the constructor arguments, not the tables: the catalog reopens as a memory map.
        return {
            "args": self._args,
            "render_mode": self.render_mode,
            "dialog": self._dialog_state(),
            "np_random": self._np_random,
            "needs_reset": self._needs_reset,
            "log": self._log,
            "last": self._last,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        a = state["args"]
        cfg: DialogConfig = a["config"]
        self.__init__(
            a["catalog"],
            a["category"],
            a["user"],
            cfg.action_mode,
            cfg.reward,
            cfg.success_bonus,
            cfg.max_turns,
            cfg.caption_length,
            cfg.observation_keys,
            state["render_mode"],
            a["user_kwargs"],
            a["tokenizer"],
            expose_target=cfg.expose_target,
            lookahead=cfg.lookahead,
        )
        for k, v in state["dialog"].items():
            getattr(self._dialog, k)[...] = v
        self._np_random = state["np_random"]
        self._needs_reset, self._log, self._last = state["needs_reset"], state["log"], state["last"]

    def _dialog_state(self) -> dict[str, np.ndarray]:
        d = self._dialog
        return {k: getattr(d, k).copy() for k in ("target", "shown", "turn", "percentile", "history")}
