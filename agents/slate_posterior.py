"""The posterior reader with slates: what to show when the shopper sees K items at once.

In the slate setting (issue "Where planning matters") an agent shows K items per turn; the
shopper compares its target with the one it finds most alike
(:meth:`fiq_gym.users.template.TemplateUser.pick`) and writes its relative caption against
that item. The reader's belief over the items in play then takes two factors per turn: which
item was picked (the pick rule applied to each candidate target; a small floor when the agent
only predicts attributes) and the caption about it (the shopper's own likelihood, as in
:mod:`fiq_gym.agents.posterior`). Two ways to fill a slate:

* :func:`top_slate`: the K most probable unseen items (the "most probable display");
* :func:`partition_slate`: built greedily from the most probable item, each next item chosen
  among the :data:`CANDIDATES` most probable to maximise ``left * P(target in slate) +
  (left - 1) * sum_j topK(P restricted to the targets that would pick item j)``: the chance of
  finding the target now, plus what the pick alone (captions aside) lets a top slate find
  next. It is cheap, and a lower bound on what planning with the caption as well can do.
* :func:`horizon_slate`: the same search, valuing what the pick tells over every turn left:
  ``left * P(target in slate) + sum_j top(K * (left - 1))(P restricted to cell j)``, as if the
  later slates together could find the ``K * (left - 1)`` most probable targets of the pick's
  cell. One-step :func:`partition_slate` counts only the next slate's K items (``left - 1``
  times), so it values a split less when several turns remain.

These are measured by ``python -m fiq_gym.benchmarks.planning_headroom`` before any slate
configuration is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.envs.inner import inner_env
from fiq_gym.users.template import TemplateUser
from fiq_gym.users.template_likelihood import ItemAttributes, TemplateLikelihood

__all__ = [
    "CANDIDATES",
    "SLATE_POLICIES",
    "PosteriorSlateAgent",
    "SlateReader",
    "horizon_slate",
    "partition_slate",
    "posterior_slate_agent",
    "slate_of",
    "top_slate",
]

#: The items a planned slate is chosen from: the most probable unseen ones.
CANDIDATES = 24
#: The most probable items the planner weighs the picks over.
SUPPORT = 512


@dataclass
class SlateReader:
    """One dialog's belief in the slate setting.

    Args:
        likelihood: the shopper's caption likelihood (its floor applies to picks too).
        items: what the reader believes of the items in play.
        shopper: the shopper's rules on ``items`` (``user.imagining(...)``): its pick rule.
    """

    likelihood: TemplateLikelihood
    items: ItemAttributes
    shopper: TemplateUser

    def __post_init__(self) -> None:
        self.log_belief = np.zeros(len(self.items))

    def belief(self) -> np.ndarray:
        """(N,) the posterior over the items in play."""
        p = np.exp(self.log_belief - self.log_belief.max())
        return p / p.sum()

    def observe(self, slate: np.ndarray, picked: int, caption: str | None) -> None:
        """Fold one turn in: the shopper picked ``slate[picked]`` and wrote ``caption`` about
        it (None: a shopper that only picks); the target is none of the slate's items (else
        the dialog would be over). A one-item slate is the index setting's turn (the first
        caption, before any slate)."""
        slate = np.asarray(slate, dtype=np.int64)
        n = len(self.items)
        with np.errstate(divide="ignore"):
            if len(slate) > 1:
                picks = self.shopper.pick(np.arange(n), slate)
                floor = self.likelihood.floor
                self.log_belief += np.log(np.where(picks == picked, 1.0, floor))
            if caption is not None:
                shown = int(slate[picked])
                self.log_belief += np.log(self.likelihood.likelihood(caption, self.items, shown))
        self.log_belief[slate] = -np.inf
        self.log_belief -= self.log_belief.max()


def top_slate(p: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable items of ``p``, most probable first."""
    top = np.argpartition(-p, k)[:k] if len(p) > k else np.arange(len(p))
    return top[np.argsort(-p[top], kind="stable")]


def _top_mass(mass: np.ndarray, cells: np.ndarray, num_cells: int, k: int) -> float:
    """sum over cells j of the ``k`` largest masses among the items of cell j."""
    total = 0.0
    for j in range(num_cells):
        inside = mass[cells == j]
        if len(inside) > k:
            inside = np.partition(inside, len(inside) - k)[-k:]
        total += float(inside.sum())
    return total


def _partition_slates(
    p: np.ndarray, k: int, left: int, shopper: TemplateUser, beam: int, horizon: bool = False
) -> list[np.ndarray]:
    """The ``beam`` best slates of a beam search on the partition objective (best first);
    ``horizon``: :func:`horizon_slate`'s value of the pick instead of :func:`partition_slate`'s."""
    support = top_slate(p, min(SUPPORT, int((p > 0).sum())))
    candidates = support[:CANDIDATES]
    if left <= 1 or len(candidates) <= k:
        return [top_slate(p, k)]
    mass = p[support]
    # what the pick is worth: the next slate's top K of the cell, counted for the turns after
    # this one (partition), or the top K per later turn of the cell, counted once (horizon)
    findable, weight = (k * (left - 1), 1) if horizon else (k, left - 1)
    partial: list[tuple[float, list[int]]] = [(0.0, [int(candidates[0])])]
    while len(partial[0][1]) < k:
        grown: dict[frozenset[int], tuple[float, list[int]]] = {}  # each set of items once
        for _, slate in partial:
            for c in candidates.tolist():
                key = frozenset([*slate, c])
                if c in slate or key in grown:
                    continue
                trial = np.array([*slate, c])
                cells = shopper.pick(support, trial)
                rest = ~np.isin(support, trial)
                value = left * float(p[trial].sum()) + weight * _top_mass(
                    np.where(rest, mass, 0.0), cells, len(trial), findable
                )
                grown[key] = (value, [*slate, c])
        # the best first; equal values keep the order they were found in (deterministic)
        partial = sorted(grown.values(), key=lambda entry: -entry[0])[:beam]
    return [np.array(slate, dtype=np.int64) for _, slate in partial]


def partition_slate(p: np.ndarray, k: int, left: int, shopper: TemplateUser) -> np.ndarray:
    """A slate chosen greedily for what it finds now and what the pick tells (module
    docstring); ``left``: the turns left, this one included."""
    return _partition_slates(p, k, left, shopper, beam=1)[0]


def horizon_slate(p: np.ndarray, k: int, left: int, shopper: TemplateUser) -> np.ndarray:
    """A slate chosen greedily for what it finds now and what the pick tells over every turn
    left (module docstring); ``left``: the turns left, this one included."""
    return _partition_slates(p, k, left, shopper, beam=1, horizon=True)[0]


#: The slate policies of :class:`PosteriorSlateAgent`.
SLATE_POLICIES = ("top", "partition", "horizon")


def slate_of(policy: str, p: np.ndarray, k: int, left: int, shopper: TemplateUser) -> np.ndarray:
    """The slate ``policy`` (one of :data:`SLATE_POLICIES`) shows for belief ``p``."""
    if policy == "top":
        return top_slate(p, k)
    if policy == "partition":
        return partition_slate(p, k, left, shopper)
    if policy == "horizon":
        return horizon_slate(p, k, left, shopper)
    raise ValueError(f"policy must be one of {list(SLATE_POLICIES)}, got {policy!r}")


class PosteriorSlateAgent:
    """The posterior reader as an agent of the env's ``slate`` action mode, batched.

    Follows :class:`fiq_gym.envs.evaluation.RetrievalAgent` and reads only what an evaluated agent
    may: the caption text, ``info["slate"]`` and ``info["slate_pick"]`` (the items it showed and
    the shopper's pick), ``info["shown"]`` at reset and ``info["dialog_turn"]``. Each dialog has
    a :class:`SlateReader`; each turn it folds in the last slate's pick and caption, then shows
    :func:`top_slate` (``policy="top"``), :func:`partition_slate` (``"partition"``) or
    :func:`horizon_slate` (``"horizon"``).
    Built by :func:`posterior_slate_agent`.
    """

    def __init__(
        self,
        likelihood: TemplateLikelihood,
        items: ItemAttributes,
        shopper: TemplateUser,
        slate_size: int,
        max_turns: int,
        policy: str = "top",
    ) -> None:
        if policy not in SLATE_POLICIES:
            raise ValueError(f"policy must be one of {list(SLATE_POLICIES)}, got {policy!r}")
        self.likelihood, self.items, self.shopper = likelihood, items, shopper
        self.slate_size, self.max_turns, self.policy = int(slate_size), int(max_turns), policy
        self.readers: list[SlateReader] = []
        self._folded: list[int] = []  # the last turn each reader has read
        self._fresh: list[bool] = []  # started by reset() and not acted on since

    def _start(self, k: int, info: dict[str, Any]) -> None:
        reader = SlateReader(self.likelihood, self.items, self.shopper)
        shown = int(np.atleast_1d(info["shown"])[k])
        reader.observe(np.array([shown]), 0, str(np.atleast_1d(info["caption_text"])[k]))
        self.readers[k], self._folded[k], self._fresh[k] = reader, 0, True

    def _resize(self, b: int) -> None:
        if len(self.readers) != b:
            self.readers = [SlateReader(self.likelihood, self.items, self.shopper) for _ in range(b)]
            self._folded = [-1] * b
            self._fresh = [False] * b

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self._resize(len(mask))
        for k in np.flatnonzero(mask):
            self._start(int(k), info)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        turn = np.atleast_1d(info["dialog_turn"])
        self._resize(len(turn))
        slates, picks = np.atleast_2d(info["slate"]), np.atleast_1d(info["slate_pick"])
        captions = np.atleast_1d(info["caption_text"])
        actions = np.empty((len(turn), self.slate_size), dtype=np.int64)
        for k in range(len(turn)):
            if turn[k] == 0:
                if not self._fresh[k]:  # auto-reset inside act: a new dialog
                    self._start(k, info)
            elif self._folded[k] < turn[k]:
                valid = slates[k] >= 0
                # positions of repeats are -1 in info["slate"]: read the items shown, in order
                picked = int(valid[: picks[k]].sum())
                self.readers[k].observe(slates[k][valid], picked, str(captions[k]))
                self._folded[k] = int(turn[k])
            self._fresh[k] = False
            p = self.readers[k].belief()
            left = self.max_turns - int(turn[k])
            actions[k] = slate_of(self.policy, p, self.slate_size, left, self.shopper)
        return actions


def posterior_slate_agent(
    env: gym.Env | gym.vector.VectorEnv, policy: str = "top", *, beliefs: str = "predicted"
) -> PosteriorSlateAgent:
    """The posterior slate agent for a ``slate``-mode ``env`` with a template shopper: its
    likelihood and beliefs as :func:`fiq_gym.agents.posterior.posterior_agent` builds them
    (``beliefs="predicted"``: what agents see), and the shopper's pick rule imagined on them."""
    from fiq_gym.agents.posterior import reader_parts

    inner = inner_env(env)
    if inner.config.action_mode != "slate":
        raise ValueError(
            f"the posterior slate agent shows slates: make the env with action_mode='slate', not "
            f"{inner.config.action_mode!r}"
        )
    likelihood, items, user = reader_parts(env, beliefs=beliefs)
    believed = user.imagining(items.codes, items.categories, items.luma)
    return PosteriorSlateAgent(
        likelihood, items, believed, inner.config.slate_size, inner.config.max_turns, policy
    )
