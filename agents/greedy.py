"""The greedy first-stage agent in every action mode: show the item the first stage scores best.

The benchmark's ``shortlist-greedy`` baseline shows the shortlist candidate with the best
first-stage score (:class:`~fiq_gym.agents.shortlist.ShortlistGreedyAgent`). The first stage
(:mod:`fiq_gym.shortlist`: by default the supervised dialog retriever shipped with the package)
reads only the dialog so far, captions and shown items, which any agent may read too. So the
same greedy policy exists in every action mode; :func:`greedy_agent` builds it:

* ``shortlist``: the candidate with the best first-stage score (the env's own first stage);
* ``index``: the first stage's best item not shown yet, by index;
* ``scores``: the first stage's scores themselves (the env shows their best unseen item);
* ``query``: that item's own feature vector (unit norm, so the item itself scores best).

With the same first stage, all four show the same item each turn (up to ties), so a dataset
recorded with ``greedy`` holds the same dialogs whatever the mode; only the actions' spelling
and, in ``scores`` and ``query`` modes, the ranks (scored by the action) differ.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.agents.shortlist import ShortlistGreedyAgent
from fiq_gym.envs.evaluation import RetrievalAgent, dialog_turns
from fiq_gym.envs.inner import inner_env
from fiq_gym.gallery import Gallery
from fiq_gym.shortlist import DialogView, FirstStage, make_first_stage

__all__ = ["FirstStageGreedyAgent", "greedy_agent"]

_STREAM = 0x47524545  # "GREE": the agent's own stream for random first stages
_MODES = ("index", "scores", "query")


class FirstStageGreedyAgent:
    """Batched agent that replays each dialog through a first stage and shows its best unseen
    item, spelled for ``action_mode`` (``index``, ``scores`` or ``query``; see the module
    docstring). It reads ``info["caption_text"]``, ``info["shown"]`` and
    ``info["dialog_turn"]`` and the gallery, nothing else.

    Args:
        first_stage: a callable ``f(DialogView) -> (B, N) scores``, e.g. from
            :func:`fiq_gym.shortlist.make_first_stage`.
        gallery: the items in play (``env.unwrapped.gallery``).
        action_mode: the env's action mode.
        seed: seeds the generators a random first stage draws from.
    """

    def __init__(
        self, first_stage: FirstStage, gallery: Gallery, action_mode: str, seed: int | None = None
    ) -> None:
        if action_mode not in _MODES:
            raise ValueError(
                f"FirstStageGreedyAgent plays action modes {list(_MODES)}, got {action_mode!r}; "
                "in shortlist mode use ShortlistGreedyAgent (greedy_agent picks it)"
            )
        self.first_stage = first_stage
        self.gallery = gallery
        self.action_mode = action_mode
        self._seed = seed
        self._shown: list[list[int]] = []
        self._captions: list[list[str]] = []
        self._rngs: list[np.random.Generator] = []

    def _resize(self, b: int) -> None:
        if len(self._shown) != b:
            self._shown = [[] for _ in range(b)]
            self._captions = [[] for _ in range(b)]
            self._rngs = [
                np.random.default_rng(None if self._seed is None else [_STREAM, self._seed, k])
                for k in range(b)
            ]

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        """Add this turn's shown item and caption to each dialog's history; the turns."""
        shown, turn, texts = dialog_turns(info, "greedy agent")
        self._resize(len(shown))
        for k in range(len(shown)):
            if turn[k] == 0:  # a new dialog (reset, or a vector env's autoreset)
                self._shown[k], self._captions[k] = [], []
            if len(self._shown[k]) == turn[k]:
                self._shown[k].append(int(shown[k]))
                self._captions[k].append(str(texts[k]))
        return turn

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self._resize(len(mask))
        for k in np.flatnonzero(mask):
            self._shown[k], self._captions[k] = [], []
        self._observe(info)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        turn = self._observe(info)
        b = len(turn)
        width = max(len(h) for h in self._shown)
        history = np.full((b, width), -1, dtype=np.int64)
        for k, items in enumerate(self._shown):
            history[k, : len(items)] = items
        view = DialogView(self.gallery, history, self._captions, turn.astype(np.int64), self._rngs)
        scores = np.nan_to_num(np.asarray(self.first_stage(view), dtype=np.float64), nan=-1.0)
        if self.action_mode == "scores":
            return np.clip(scores, -1.0, 1.0).astype(np.float32)
        unseen = scores.copy()
        for k, items in enumerate(self._shown):
            unseen[k, items] = -np.inf
        best = np.argmax(unseen, axis=1)
        if self.action_mode == "index":
            return best.astype(np.int64)
        return np.asarray(self.gallery.features[best], dtype=np.float32)


def greedy_agent(
    env: gym.Env | gym.vector.VectorEnv, first_stage: str | FirstStage = "retriever", seed: int | None = None
) -> RetrievalAgent:
    """The greedy first-stage agent for ``env``'s action mode (see the module docstring).

    In ``shortlist`` mode it shows the env's best-scored candidate (the env's own first stage;
    ``first_stage`` is not used); elsewhere it runs ``first_stage`` (``"retriever"``: the
    shipped supervised retriever, ``"retriever:DIR"``, ``"random"`` or a callable) itself.
    A first stage that does not fit the catalog raises ``ValueError`` naming the mismatch.
    """
    inner = inner_env(env)
    mode = inner.config.action_mode
    if mode == "shortlist":
        return ShortlistGreedyAgent()
    stage = make_first_stage(first_stage, inner.catalog, inner.gallery)
    return FirstStageGreedyAgent(stage, inner.gallery, mode, seed)
