"""Action modes: what an agent's action is and which garment it shows.

An environment holds one :class:`ActionMode`. The mode owns everything that differs between
modes: the action space, the validation of actions, the rule for which item a turn shows
and the target's rank then, the observation keys and info keys it adds, and its per-dialog
state (the shortlist's candidates). The dialog engine (:mod:`fiq_gym.dialog_engine`) owns
what every mode shares: targets, turns, history, the shopper's captions, rewards and ends.

Modes, by the env's ``action_mode=`` name (:data:`ACTION_MODES`):

* ``index``: ``Discrete(N)``, the item to show (repeats allowed, flagged in ``info``);
* ``query``: ``Box(-1, 1, (D,))``, a query in feature space; the env shows the unseen item
  most similar to it and ranks the gallery by that similarity;
* ``scores``: ``Box(-1, 1, (N,))``, a score per item; the env shows the best unseen item and
  ranks the gallery by the scores;
* ``shortlist``: ``Discrete(K)``, a slot among K candidates a first stage proposes from the
  dialog so far (:mod:`fiq_gym.shortlist`); the observation carries the candidates.

Adding a mode is a subclass and an entry in :data:`MODES`; the engine and the envs do not
change. Modes are built per engine (:meth:`ActionMode.build`), so their state arrays have one
row per dialog of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from gymnasium import spaces

from fiq_gym.gallery import Gallery
from fiq_gym.metrics import target_rank
from fiq_gym.ranking import Ranker, best_unseen

__all__ = [
    "ACTION_MODES",
    "CANDIDATE_KEYS",
    "MODES",
    "MODE_INFO_KEY_DOCS",
    "MODE_OBSERVATION_KEY_DOCS",
    "SLATE_KEYS",
    "ActionMode",
    "DialogView",
    "FirstStage",
    "IndexMode",
    "ModeSettings",
    "Picker",
    "QueryMode",
    "ScoresMode",
    "ShortlistMode",
    "ShortlistSlateMode",
    "SlateMode",
    "mode_class",
]

# The shortlist's candidates (``action_mode="shortlist"`` only, where they are in the default
# observation): slot k's features, attribute scores, first-stage score and validity.
CANDIDATE_KEYS = ("candidate_features", "candidate_attributes", "candidate_scores", "candidate_mask")
# The slate just shown (``action_mode="slate"`` only, in its default observation): its items'
# features and attribute scores, which positions hold an item (a repeat within the slate
# holds none), and the position the shopper picked.
SLATE_KEYS = ("slate_features", "slate_attributes", "slate_mask", "slate_pick")
# What each key a mode adds holds (tools/spec_docs.py writes the docs' tables from these and the
# engine's own, fiq_gym.dialog_engine.OBSERVATION_KEY_DOCS / INFO_KEY_DOCS). K is the mode's
# shortlist_size for the candidate keys, its slate_size for the slate keys.
#: The meaning of each observation key an action mode adds.
MODE_OBSERVATION_KEY_DOCS: dict[str, str] = {
    "candidate_features": "row k: the features of candidate slot k",
    "candidate_attributes": "row k: its attribute scores",
    "candidate_scores": "row k: its first-stage score (clipped to [-1, 1])",
    "candidate_mask": "1 for a real candidate, 0 for an empty slot",
    "slate_features": "row k: the features of the last slate's position k",
    "slate_attributes": "row k: its attribute scores",
    "slate_mask": "1 where a position held an item (0: empty or a repeat)",
    "slate_pick": "the position the shopper picked",
}
#: Each info key an action mode adds: its type per dialog and its meaning.
MODE_INFO_KEY_DOCS: dict[str, tuple[str, str]] = {
    "candidates": ("int64 (K,)", "the item index in each candidate slot"),
    "slate": ("int64 (K,)", "the items shown, -1 where a position is empty (a repeat within the slate)"),
    "slate_pick": ("int", "the position the shopper picked"),
}


@dataclass(frozen=True)
class DialogView:
    """What a first stage may read about B dialogs: their history, never their targets.

    Attributes:
        gallery: features and attribute scores of the items in play.
        history: (B, T + 1) items shown at turns 0..t (row 0 the reset's), -1 afterwards.
        captions: per dialog, the caption texts of turns 0..t.
        turn: (B,) turns taken.
        rngs: one generator per dialog, the dialog's shortlist stream (for random first
            stages; drawing from it changes nothing else in the episode).
    """

    gallery: Gallery
    history: np.ndarray
    captions: Sequence[Sequence[str]]
    turn: np.ndarray
    rngs: Sequence[np.random.Generator]


FirstStage = Callable[[DialogView], np.ndarray]
#: A shopper's pick among several items shown at once: ``picker(targets, slates)`` with (B,)
#: target and (B, K) slate catalog rows gives the (B,) slate positions the shopper compares
#: its targets with (:meth:`fiq_gym.users.template.TemplateUser.pick`).
Picker = Callable[[np.ndarray, np.ndarray], np.ndarray]


class ModeSettings(Protocol):
    """The dialog settings a mode reads (:class:`fiq_gym.dialog_engine.DialogConfig` has them)."""

    @property
    def action_mode(self) -> str: ...
    @property
    def max_turns(self) -> int: ...
    @property
    def shortlist_size(self) -> int: ...
    @property
    def num_explore(self) -> int: ...
    @property
    def slate_size(self) -> int: ...
    @property
    def observation_keys(self) -> tuple[str, ...]: ...


class ActionMode:
    """One action mode of one engine: its space, its rule and its per-dialog state.

    Subclasses set :attr:`name` and implement :meth:`outcome` and :meth:`_make_space`; modes
    with state or extra observations override the hooks, which do nothing here.
    """

    #: The env's ``action_mode=`` name.
    name: ClassVar[str] = ""
    #: Observation keys the mode adds to the default observation.
    observation_keys: ClassVar[tuple[str, ...]] = ()
    #: Info keys the mode adds to every ``info``.
    info_keys: ClassVar[tuple[str, ...]] = ()
    #: What one action names, for error messages.
    action_noun: ClassVar[str] = "action"
    #: Whether the mode proposes candidates with a first stage (``shortlist=``).
    uses_first_stage: ClassVar[bool] = False
    #: Whether the mode shows several items a turn, among which the shopper picks.
    uses_picker: ClassVar[bool] = False

    def __init__(self, tables: Gallery, num_dialogs: int, settings: ModeSettings) -> None:
        self.tables = tables
        self.num_dialogs = num_dialogs
        self.settings = settings
        self.space = self._make_space()

    @classmethod
    def build(
        cls,
        tables: Gallery,
        num_dialogs: int,
        settings: ModeSettings,
        first_stage: FirstStage | None = None,
        picker: Picker | None = None,
    ) -> ActionMode:
        """The mode for an engine of ``num_dialogs`` dialogs over ``tables``; ``first_stage``
        proposes the shortlist's candidates, ``picker`` is the shopper's pick among a slate."""
        if first_stage is not None:
            raise ValueError(f"a first stage only applies to action_mode='shortlist', not {cls.name!r}")
        return cls(tables, num_dialogs, settings)

    def _make_space(self) -> spaces.Space[Any]:
        raise NotImplementedError

    # --- actions -----------------------------------------------------------------------------
    def check(self, actions: Any, batched: bool) -> np.ndarray:
        """Validate actions against the space; raise ``ValueError`` naming both.

        Returns int64 indices (B,) or float32 arrays (B, dim).
        """
        raise NotImplementedError

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What checked ``actions`` show in dialogs ``rows``, without changing any state.

        Args:
            ranker: the env's ranker (:mod:`fiq_gym.ranking`), which scores the gallery.
            rows: (B,) dialogs of the batch the actions are for.
            actions: checked actions, one per row.
            target: (B,) the rows' targets.
            history: (B, T + 1) items shown so far in each row, -1 where none.

        Returns:
            ``(shown, rank, repeated)``: the (B,) items shown, the target's (B,) ranks by the
            mode's ranking (0 where it is shown) and whether each item was shown before.
        """
        raise NotImplementedError

    # --- per-dialog state and observation (hooks) ----------------------------------------------
    def start(self, rows: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        """Dialogs ``rows`` start; draw any of the mode's own streams from ``rngs`` (after the
        reset's target and first item, so the mode never shifts them)."""

    def advance(self, rows: np.ndarray, actions: np.ndarray, shown: np.ndarray) -> None:
        """Dialogs ``rows`` played ``actions``, which showed ``shown`` (:meth:`outcome`'s)."""

    def observation_spaces(self) -> dict[str, spaces.Space[Any]]:
        """The spaces of :attr:`observation_keys`."""
        return {}

    def observe(
        self, rows: np.ndarray, captions: Sequence[str], history: np.ndarray, turn: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The mode's observation keys for dialogs ``rows`` after a caption (those asked for)."""
        return {}

    def info(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The mode's info keys for dialogs ``rows``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The mode's per-dialog state (copies), for pickles."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class _ItemChoice(ActionMode):
    """Modes whose action is one integer."""

    def check(self, actions: Any, batched: bool) -> np.ndarray:
        space = self.space
        assert isinstance(space, spaces.Discrete)
        b = self.num_dialogs if batched else 1
        arr = np.asarray(actions)
        want: tuple[int, ...] = (b,) if batched else ()
        if arr.dtype.kind not in "iu" or arr.shape != want:
            raise ValueError(
                f"action must be an integer {self.action_noun} of shape {want} for {space}, "
                f"got {actions!r} (dtype {arr.dtype}, shape {arr.shape})"
            )
        arr = arr.astype(np.int64).reshape(b)
        bad = (arr < 0) | (arr >= space.n)
        if bad.any():
            raise ValueError(
                f"action {arr[bad][0]} is out of range for {space}: indices lie in [0, {space.n - 1}]"
            )
        return arr

    def chosen(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The items ``actions`` name in dialogs ``rows``."""
        raise NotImplementedError

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shown = self.chosen(rows, actions)
        repeated = (history == shown[:, None]).any(axis=1)
        # The gallery ranked by similarity to the item shown, as a person looking at it would.
        return shown, ranker.similar_ranks(shown, target), repeated


class IndexMode(_ItemChoice):
    """``Discrete(N)``: the agent names the item to show."""

    name = "index"
    action_noun = "item index"

    def _make_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.tables.num_items)

    def chosen(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.asarray(actions, dtype=np.int64)


class _Continuous(ActionMode):
    """Modes whose action is a float vector in [-1, 1]."""

    def check(self, actions: Any, batched: bool) -> np.ndarray:
        space = self.space
        assert isinstance(space, spaces.Box)
        b = self.num_dialogs if batched else 1
        arr = np.asarray(actions)
        dim = space.shape[0]
        want = (b, dim) if batched else (dim,)
        if arr.dtype.kind != "f" or arr.shape != want:
            raise ValueError(
                f"action must be a float array of shape {want} for {space}, got dtype {arr.dtype}, shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(
                f"action contains NaN or inf for {space}; got {arr.reshape(-1)[~np.isfinite(arr.reshape(-1))][:3]}"
            )
        if (arr < -1.0).any() or (arr > 1.0).any():
            raise ValueError(
                f"action values must lie in [-1, 1] for {space}; got min {arr.min():.4g}, max {arr.max():.4g} "
                "(scale your scores or queries: only their order matters)"
            )
        return arr.astype(np.float32, copy=False).reshape(b, dim)


class QueryMode(_Continuous):
    """``Box(-1, 1, (D,))``: a query vector; the unseen item most similar to it is shown."""

    name = "query"

    def _make_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.tables.feature_dim,), np.float32)

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shown, rank = ranker.query_ranks(actions, target, history)
        return shown, rank, np.zeros(len(rows), dtype=bool)


class ScoresMode(_Continuous):
    """``Box(-1, 1, (N,))``: the agent's scores are the ranking; the best unseen item is shown."""

    name = "scores"

    def _make_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.tables.num_items,), np.float32)

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return best_unseen(actions, history), target_rank(actions, target), np.zeros(len(rows), dtype=bool)


class ShortlistMode(_ItemChoice):
    """``Discrete(K)``: a slot among the K candidates a first stage proposes each turn.

    State per dialog: the candidates, their first-stage scores and validity, the dialog's
    shortlist stream (drawn from its own generator at reset, so candidates never shift the
    shopper's draws) and the caption texts the first stage reads.
    """

    name = "shortlist"
    action_noun = "candidate slot"
    uses_first_stage = True
    observation_keys: ClassVar[tuple[str, ...]] = CANDIDATE_KEYS
    info_keys: ClassVar[tuple[str, ...]] = ("candidates",)

    def __init__(
        self, tables: Gallery, num_dialogs: int, settings: ModeSettings, first_stage: FirstStage
    ) -> None:
        super().__init__(tables, num_dialogs, settings)
        self.first_stage = first_stage
        b, k = num_dialogs, settings.shortlist_size
        self.candidates = np.full((b, k), -1, dtype=np.int64)
        self.candidate_scores = np.zeros((b, k), dtype=np.float32)
        self.candidate_mask = np.zeros((b, k), dtype=np.int8)
        self.shortlist_rngs: list[np.random.Generator] = [np.random.default_rng(0) for _ in range(b)]
        self.caption_texts: list[list[str]] = [[] for _ in range(b)]

    @classmethod
    def build(
        cls,
        tables: Gallery,
        num_dialogs: int,
        settings: ModeSettings,
        first_stage: FirstStage | None = None,
        picker: Picker | None = None,
    ) -> ActionMode:
        if first_stage is None:
            raise ValueError("action_mode='shortlist' needs a first stage (see fiq_gym.shortlist)")
        k = settings.shortlist_size
        need = k + settings.max_turns + 1
        if tables.num_items < need:
            raise ValueError(
                f"shortlist_size={k} needs at least {need} items in play (K + max_turns + 1), this env has "
                f"{tables.num_items}; pass a smaller shortlist_size"
            )
        return cls(tables, num_dialogs, settings, first_stage)

    def _make_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.settings.shortlist_size)

    def chosen(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return self.candidates[rows, actions]

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        empty = self.candidate_mask[rows, actions] == 0
        if empty.any():
            raise ValueError(
                f"candidate slot {actions[empty][0]} is empty (obs['candidate_mask'] is 0 there); "
                "choose a slot whose mask is 1"
            )
        return super().outcome(ranker, rows, actions, target, history)

    def start(self, rows: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        for row, rng in zip(rows, rngs, strict=True):
            self.shortlist_rngs[row] = np.random.default_rng(int(rng.integers(2**63)))
            self.caption_texts[row] = []

    def observation_spaces(self) -> dict[str, spaces.Space[Any]]:
        k, t = self.settings.shortlist_size, self.tables
        d, a = t.feature_dim, t.side_info.shape[1]
        return {
            "candidate_features": spaces.Box(-1.0, 1.0, (k * d,), np.float32),
            "candidate_attributes": spaces.Box(0.0, 1.0, (k * a,), np.float32),
            "candidate_scores": spaces.Box(-1.0, 1.0, (k,), np.float32),
            "candidate_mask": spaces.MultiBinary(k),
        }

    def observe(
        self,
        rows: np.ndarray,
        captions: Sequence[str],
        history: np.ndarray,
        turn: np.ndarray,
        exclude: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """As :meth:`ActionMode.observe`; ``exclude``: (B, S) more items never to propose
        (-1 padded), those a slate showed besides its pick."""
        for i, row in enumerate(rows):
            self.caption_texts[row].append(captions[i])
        self._propose(rows, history, turn, exclude)
        t, keys, b = self.tables, self.settings.observation_keys, len(rows)
        cand = self.candidates[rows]
        valid = self.candidate_mask[rows].astype(bool)
        safe = np.maximum(cand, 0)
        obs: dict[str, np.ndarray] = {}
        if "candidate_features" in keys:
            obs["candidate_features"] = (t.features[safe] * valid[..., None]).reshape(b, -1)
        if "candidate_attributes" in keys:
            obs["candidate_attributes"] = (t.side_info[safe] * valid[..., None]).reshape(b, -1)
        if "candidate_scores" in keys:
            obs["candidate_scores"] = self.candidate_scores[rows].copy()
        if "candidate_mask" in keys:
            obs["candidate_mask"] = self.candidate_mask[rows].copy()
        return obs

    def _propose(
        self, rows: np.ndarray, history: np.ndarray, turn: np.ndarray, exclude: np.ndarray | None = None
    ) -> None:
        """The first stage's K candidates for dialogs ``rows``: the best-scoring unseen items
        (ties: the lower index first), ``num_explore`` of them replaced by uniform random
        unseen items, in a random order drawn from the dialog's shortlist stream."""
        n, k, n_explore = self.tables.num_items, self.settings.shortlist_size, self.settings.num_explore
        view = DialogView(
            gallery=self.tables,
            history=history.copy(),
            captions=[tuple(self.caption_texts[r]) for r in rows],
            turn=turn.copy(),
            rngs=[self.shortlist_rngs[r] for r in rows],
        )
        scores = np.asarray(self.first_stage(view), dtype=np.float64)
        if scores.shape != (len(rows), n):
            raise ValueError(
                f"the first stage returned scores of shape {scores.shape}, expected ({len(rows)}, {n}): "
                "one score per item in play for each dialog"
            )
        for i, row in enumerate(rows):
            rng = self.shortlist_rngs[row]
            s = scores[i].copy()
            s[np.nan_to_num(s, nan=-np.inf) != s] = -np.inf  # NaN never proposed
            seen = history[i][history[i] >= 0]
            if exclude is not None:
                seen = np.concatenate([seen, exclude[i][exclude[i] >= 0]])
            s[seen] = -np.inf
            top = best_indices(s, k - n_explore)
            top = top[np.isfinite(s[top])]
            picks = np.empty(0, dtype=np.int64)
            if n_explore:
                pool = np.ones(n, dtype=bool)
                pool[seen] = False
                pool[top] = False
                pool_idx = np.flatnonzero(pool)
                picks = rng.choice(pool_idx, size=min(n_explore, len(pool_idx)), replace=False)
            chosen = np.concatenate([top, picks]).astype(np.int64)
            chosen = chosen[rng.permutation(len(chosen))]
            m = len(chosen)
            self.candidates[row] = -1
            self.candidates[row, :m] = chosen
            self.candidate_mask[row] = 0
            self.candidate_mask[row, :m] = 1
            self.candidate_scores[row] = 0.0
            self.candidate_scores[row, :m] = np.clip(np.nan_to_num(scores[i][chosen], neginf=-1.0), -1.0, 1.0)

    def info(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"candidates": self.candidates[rows].copy()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates.copy(),
            "candidate_scores": self.candidate_scores.copy(),
            "candidate_mask": self.candidate_mask.copy(),
            "shortlist_rngs": list(self.shortlist_rngs),
            "caption_texts": [list(t) for t in self.caption_texts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.candidates[...] = state["candidates"]
        self.candidate_scores[...] = state["candidate_scores"]
        self.candidate_mask[...] = state["candidate_mask"]
        self.shortlist_rngs = list(state["shortlist_rngs"])
        self.caption_texts = [list(t) for t in state["caption_texts"]]


class SlateMode(ActionMode):
    """``MultiDiscrete([N] * K)``: K items shown at once; the shopper picks one and captions it.

    Each turn the agent shows a slate of ``slate_size`` K items (item indices in play). The
    dialog succeeds when the target is in the slate (the shopper picks it). Otherwise the
    shopper picks the slate item most like its target by its own rule on attribute
    differences (:meth:`fiq_gym.users.template.TemplateUser.pick`: the least
    salience-weighted differences, ties to the earliest position; shoppers without a rule of
    their own pick by the template shopper's with its default salience) and writes its
    relative caption about that item. The picked item is the turn's ``shown`` item: the
    caption is about it, the history holds it and the target is ranked by similarity to it,
    as in ``index`` mode. An item repeated within a slate counts once, at its first position
    (its later positions are masked out in ``slate_mask`` and never picked); items shown in
    earlier turns may be shown again (``info["repeated"]`` flags a picked item picked before).

    The reset shows one item, as in every mode: its observation's slate holds that item at
    position 0 and nothing else.
    """

    name = "slate"
    action_noun = "slate of item indices"
    uses_picker = True
    observation_keys: ClassVar[tuple[str, ...]] = SLATE_KEYS
    info_keys: ClassVar[tuple[str, ...]] = ("slate", "slate_pick")

    def __init__(self, tables: Gallery, num_dialogs: int, settings: ModeSettings, picker: Picker) -> None:
        super().__init__(tables, num_dialogs, settings)
        self.picker = picker
        b, k = num_dialogs, settings.slate_size
        # The slate each dialog saw last (-1 where a position holds no new item) and its pick.
        self.slates = np.full((b, k), -1, dtype=np.int64)
        self.picks = np.zeros(b, dtype=np.int64)

    @classmethod
    def build(
        cls,
        tables: Gallery,
        num_dialogs: int,
        settings: ModeSettings,
        first_stage: FirstStage | None = None,
        picker: Picker | None = None,
    ) -> ActionMode:
        if first_stage is not None:
            raise ValueError("a first stage only applies to action_mode='shortlist', not 'slate'")
        if picker is None:
            raise ValueError(
                "action_mode='slate' needs the shopper's pick rule (a picker; see fiq_gym.action_modes)"
            )
        k = settings.slate_size
        if not 2 <= k <= tables.num_items - 1:
            raise ValueError(
                f"slate_size must be from 2 to {tables.num_items - 1} (the items in play less the target), got {k}"
            )
        return cls(tables, num_dialogs, settings, picker)

    #: What one entry of the action names, and what its range is called, for error messages.
    entry_noun: ClassVar[tuple[str, str]] = ("slate item", "indices")

    def _choices(self) -> int:
        """How many values each slate position may take (N items here)."""
        return self.tables.num_items

    def _make_space(self) -> spaces.MultiDiscrete:
        return spaces.MultiDiscrete(np.full(self.settings.slate_size, self._choices()), dtype=np.int64)

    def check(self, actions: Any, batched: bool) -> np.ndarray:
        k, n = self.settings.slate_size, self._choices()
        b = self.num_dialogs if batched else 1
        arr = np.asarray(actions)
        want = (b, k) if batched else (k,)
        if arr.dtype.kind not in "iu" or arr.shape != want:
            raise ValueError(
                f"action must be an integer {self.action_noun} of shape {want} for {self.space}, "
                f"got dtype {arr.dtype}, shape {arr.shape}"
            )
        arr = arr.astype(np.int64).reshape(b, k)
        bad = (arr < 0) | (arr >= n)
        if bad.any():
            what, values = self.entry_noun
            raise ValueError(
                f"{what} {arr[bad][0]} is out of range for {self.space}: {values} lie in [0, {n - 1}]"
            )
        return arr

    @staticmethod
    def first_positions(slates: np.ndarray) -> np.ndarray:
        """(B, K) True where a slate position holds an item for the first time in its slate."""
        earlier = slates[:, :, None] == slates[:, None, :]  # [b, i, j]: position j holds i's item
        return ~np.tril(earlier, k=-1).any(axis=2)

    def pick(self, slates: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(B,) the positions the shoppers pick: the target's first position when it is in the
        slate, else the shopper's rule (a repeated item ties with its first position, and ties
        go to the earliest, so a repeat is never picked)."""
        rows = self.tables.rows
        found = slates == target[:, None]
        picked = np.asarray(self.picker(rows[target], rows[slates]), dtype=np.int64)
        return np.where(found.any(axis=1), found.argmax(axis=1), picked)

    def items(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(B, K) the items checked ``actions`` show in dialogs ``rows``."""
        return actions

    def outcome(
        self, ranker: Ranker, rows: np.ndarray, actions: np.ndarray, target: np.ndarray, history: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slates = self.items(rows, actions)
        shown = slates[np.arange(len(rows)), self.pick(slates, target)]
        repeated = (history == shown[:, None]).any(axis=1)
        return shown, ranker.similar_ranks(shown, target), repeated

    def start(self, rows: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        self.slates[rows] = -1
        self.picks[rows] = 0

    def advance(self, rows: np.ndarray, actions: np.ndarray, shown: np.ndarray) -> None:
        slates = self.items(rows, actions)
        first = self.first_positions(slates)
        self.slates[rows] = np.where(first, slates, -1)
        self.picks[rows] = (slates == shown[:, None]).argmax(axis=1)

    def observation_spaces(self) -> dict[str, spaces.Space[Any]]:
        k, t = self.settings.slate_size, self.tables
        d, a = t.feature_dim, t.side_info.shape[1]
        return {
            "slate_features": spaces.Box(-1.0, 1.0, (k * d,), np.float32),
            "slate_attributes": spaces.Box(0.0, 1.0, (k * a,), np.float32),
            "slate_mask": spaces.MultiBinary(k),
            "slate_pick": spaces.Box(0, k - 1, (1,), np.int64),
        }

    def observe(
        self, rows: np.ndarray, captions: Sequence[str], history: np.ndarray, turn: np.ndarray
    ) -> dict[str, np.ndarray]:
        t, keys, b = self.tables, self.settings.observation_keys, len(rows)
        at_reset = turn == 0
        if at_reset.any():
            # The reset shows one item: the slate is that item alone.
            reset_rows = rows[at_reset]
            self.slates[reset_rows] = -1
            self.slates[reset_rows, 0] = history[at_reset, 0]
            self.picks[reset_rows] = 0
        slates = self.slates[rows]
        valid = slates >= 0
        safe = np.maximum(slates, 0)
        obs: dict[str, np.ndarray] = {}
        if "slate_features" in keys:
            obs["slate_features"] = (t.features[safe] * valid[..., None]).reshape(b, -1)
        if "slate_attributes" in keys:
            obs["slate_attributes"] = (t.side_info[safe] * valid[..., None]).reshape(b, -1)
        if "slate_mask" in keys:
            obs["slate_mask"] = valid.astype(np.int8)
        if "slate_pick" in keys:
            obs["slate_pick"] = self.picks[rows][:, None].copy()
        return obs

    def info(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"slate": self.slates[rows].copy(), "slate_pick": self.picks[rows].copy()}

    def state_dict(self) -> dict[str, Any]:
        return {"slates": self.slates.copy(), "picks": self.picks.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slates[...] = state["slates"]
        self.picks[...] = state["picks"]


class ShortlistSlateMode(SlateMode):
    """``MultiDiscrete([M] * K)``: a slate of K candidate slots among M a first stage proposes.

    The ``slate`` mode's rules (the target in the slate wins; else the shopper picks and
    captions) over the ``shortlist`` mode's candidates: each turn the observation proposes
    M = ``shortlist_size`` candidates, none shown in an earlier slate of the dialog, and the
    action names K = ``slate_size`` of their slots. A slot named twice counts once, at its
    first position; an empty slot (``candidate_mask`` 0) raises ``ValueError``. ``info["slate"]``
    gives item indices, as in ``slate`` mode, and ``info["candidates"]`` the slots' items. The
    action space is small whatever the catalog: the setting in which off-the-shelf agents
    (SB3's ``MultiDiscrete`` policies) can learn to fill a slate.
    """

    name = "shortlist_slate"
    action_noun = "slate of candidate slots"
    uses_first_stage = True
    observation_keys: ClassVar[tuple[str, ...]] = CANDIDATE_KEYS + SLATE_KEYS
    info_keys: ClassVar[tuple[str, ...]] = ("candidates", "slate", "slate_pick")

    def __init__(
        self,
        tables: Gallery,
        num_dialogs: int,
        settings: ModeSettings,
        picker: Picker,
        first_stage: FirstStage,
    ) -> None:
        super().__init__(tables, num_dialogs, settings, picker)
        self.shortlist = ShortlistMode(tables, num_dialogs, settings, first_stage)
        # every item the dialog's slates showed (-1 padded): the shortlist proposes none again
        self.slate_items = np.full(
            (num_dialogs, settings.max_turns * settings.slate_size), -1, dtype=np.int64
        )
        self.filled = np.zeros(num_dialogs, dtype=np.int64)

    @classmethod
    def build(
        cls,
        tables: Gallery,
        num_dialogs: int,
        settings: ModeSettings,
        first_stage: FirstStage | None = None,
        picker: Picker | None = None,
    ) -> ActionMode:
        if first_stage is None:
            raise ValueError("action_mode='shortlist_slate' needs a first stage (see fiq_gym.shortlist)")
        if picker is None:
            raise ValueError("action_mode='shortlist_slate' needs the shopper's pick rule (a picker)")
        m, k = settings.shortlist_size, settings.slate_size
        if not 2 <= k <= m:
            raise ValueError(f"slate_size must be from 2 to shortlist_size={m}, got {k}")
        need = m + settings.max_turns * k + 1
        if tables.num_items < need:
            raise ValueError(
                f"shortlist_size={m} and slate_size={k} need at least {need} items in play "
                f"(M + max_turns * K + 1), this env has {tables.num_items}; pass smaller sizes"
            )
        return cls(tables, num_dialogs, settings, picker, first_stage)

    entry_noun = ("candidate slot", "slots")

    def _choices(self) -> int:
        """How many values each slate position may take (M candidate slots here)."""
        return self.settings.shortlist_size

    def items(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        empty = np.take_along_axis(self.shortlist.candidate_mask[rows], actions, axis=1) == 0
        if empty.any():
            raise ValueError(
                f"candidate slot {actions[empty][0]} is empty (obs['candidate_mask'] is 0 there); "
                "choose slots whose mask is 1"
            )
        return np.take_along_axis(self.shortlist.candidates[rows], actions, axis=1)

    def start(self, rows: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        super().start(rows, rngs)
        self.shortlist.start(rows, rngs)
        self.slate_items[rows] = -1
        self.filled[rows] = 0

    def advance(self, rows: np.ndarray, actions: np.ndarray, shown: np.ndarray) -> None:
        slates = self.items(rows, actions)
        super().advance(rows, actions, shown)
        k = self.settings.slate_size
        for i, row in enumerate(rows):
            at = self.filled[row]
            self.slate_items[row, at : at + k] = slates[i]
            self.filled[row] = at + k

    def observation_spaces(self) -> dict[str, spaces.Space[Any]]:
        return {**self.shortlist.observation_spaces(), **super().observation_spaces()}

    def observe(
        self, rows: np.ndarray, captions: Sequence[str], history: np.ndarray, turn: np.ndarray
    ) -> dict[str, np.ndarray]:
        obs = self.shortlist.observe(rows, captions, history, turn, exclude=self.slate_items[rows])
        obs.update(super().observe(rows, captions, history, turn))
        return obs

    def info(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {**self.shortlist.info(rows), **super().info(rows)}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "shortlist": self.shortlist.state_dict(),
            "slate_items": self.slate_items.copy(),
            "filled": self.filled.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.shortlist.load_state_dict(state["shortlist"])
        self.slate_items[...] = state["slate_items"]
        self.filled[...] = state["filled"]


def best_indices(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` highest ``scores``, best first, ties to the lower index: the first
    ``m`` of a stable argsort of ``-scores``, without sorting all N items each turn."""
    n = len(scores)
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    if m >= n:
        return np.argsort(-scores, kind="stable")
    threshold = np.partition(scores, n - m)[n - m]  # the m-th highest score
    pool = np.flatnonzero(scores >= threshold)  # ascending index, so a stable sort breaks ties low
    return pool[np.argsort(-scores[pool], kind="stable")][:m]


#: The env's ``action_mode=`` names and their classes.
MODES: dict[str, type[ActionMode]] = {
    m.name: m for m in (IndexMode, QueryMode, ScoresMode, ShortlistMode, SlateMode, ShortlistSlateMode)
}
ACTION_MODES = tuple(MODES)


def mode_class(name: str) -> type[ActionMode]:
    """The class of action mode ``name``; ``ValueError`` listing the names otherwise."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"action_mode must be one of {list(ACTION_MODES)}, got {name!r}") from None
