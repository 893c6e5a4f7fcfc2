"""``PlaySession``: a person (or a watched simulated shopper) against a retriever, UI-free.

The terminal and the web page are thin views over this class. It owns a real
:class:`~fiq_gym.envs.FashionIQEnv` (made with ``gym.make`` from the agent's env id), the
agent, the dialog history and saving.

**How a person fits the env's turn order.** The env asks its user for the caption of a
garment in the same ``reset`` / ``step`` call that shows it, but a person can only describe
a garment after seeing it. So each turn is *announced* first: the agent acts on the last
observation, and the session asks the env which garment that action would show and where the
target would then rank, without stepping (:func:`fiq_gym.envs.inner.step_outcome`: the env's
own action mode and ranker, the code its ``step`` runs). The person sees that garment and
answers; the session queues the answer on its :class:`~fiq_gym.users.human.HumanUser` and
only then calls ``env.step(action)`` with the agent's action, which captions the garment with
the person's words. The person is not asked about the target once it is shown (the dialog is won) nor
about the garment shown at the last turn (nobody would read the answer).

In **watch** mode the agent's training shopper (template or transformer) answers instead,
inside the env, one turn per :meth:`PlaySession.advance`.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np

from fiq_gym.envs.inner import similar_rank, step_outcome
from fiq_gym.metrics import rank_percentile
from fiq_gym.play.agent import PlayAgent
from fiq_gym.play.record import DialogRecord, TurnRecord, append_dialogs, catalog_identity
from fiq_gym.users.human import HumanUser, clean_caption

if TYPE_CHECKING:
    from fiq_gym.envs.fashion_iq import FashionIQEnv

__all__ = ["MODES", "PlaySession", "SessionStateError"]

MODES = ("human", "watch")


class SessionStateError(RuntimeError):
    """An action that the dialog's current state does not allow (e.g. feedback after the end)."""


class PlaySession:
    """Dialogs between one shopper and one retriever, one after another.

    Args:
        agent: the retriever, from :func:`~fiq_gym.play.agent.load_play_agent`.
        mode: ``"human"`` (a person types the feedback: :meth:`submit`) or ``"watch"`` (the
            agent's training shopper answers: :meth:`advance`).
        seed: seeds the targets and first garments dealt, and the shopper's wording in watch
            mode.
        save_path: if given, every dialog is added to this JSON file (atomically) when it
            ends, or when it is abandoned for a new one after the person gave feedback.

    Thread safety: the web server calls one session from several request threads; every
    public method holds the session's lock.
    """

    def __init__(
        self,
        agent: PlayAgent,
        *,
        mode: str = "human",
        seed: int | None = None,
        save_path: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.agent = agent
        self.mode = mode
        self.save_path = save_path
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(seed)
        self.human: HumanUser | None = None
        if mode == "human":
            self.human = HumanUser(agent.catalog, tokenizer=agent.tokenizer)
            user: Any = self.human
        else:
            user = agent.shopper
        self.env = gym.make(
            agent.env_id,
            catalog=agent.catalog,
            user=user,
            tokenizer=agent.tokenizer,
            action_mode=agent.action_mode,
            max_turns=agent.max_turns,
            max_episode_steps=agent.max_turns,
        )
        self.retriever = agent.make(self.env)
        inner = cast("FashionIQEnv", self.env.unwrapped)
        self.gallery = inner.gallery
        self.num_items = int(inner.num_items)
        self.max_turns = int(agent.max_turns)
        self.catalog = agent.catalog
        self.dialog: DialogRecord | None = None
        self.past: list[DialogRecord] = []  # finished, or abandoned after some feedback
        self._obs: dict[str, np.ndarray] | None = None
        self._info: dict[str, Any] | None = None
        self._pending: np.ndarray | None = None  # the announced turn's action (human mode)
        self._reset_seed = 0

    # --- items ---------------------------------------------------------------------------------
    def row_of(self, index: int) -> int:
        """Catalog row of the item at ``index`` among the items in play."""
        return int(self.gallery.rows[index])

    def resolve_item(self, item: int | str) -> int:
        """The index in play of ``item``: an index in play (int), an item id (str), or the
        digits of an index (a str that is no item id)."""
        if isinstance(item, bool):
            raise ValueError(f"not an item: {item!r}")
        if isinstance(item, int | np.integer):
            if not 0 <= int(item) < self.num_items:
                raise ValueError(f"item index {item} is out of range; valid: 0..{self.num_items - 1}")
            return int(item)
        if isinstance(item, str):
            text = item.strip()
            hits = np.flatnonzero(np.asarray(self.catalog.ids)[self.gallery.rows] == text)
            if len(hits):
                return int(hits[0])
            if text.isdigit():  # not an id: an index in play
                return self.resolve_item(int(text))
            raise ValueError(f"no item with id {text[:80]!r} among the {self.num_items} items in play")
        raise ValueError(f"an item is an index in play or an item id, got {type(item).__name__}")

    def item(self, index: int) -> dict[str, Any]:
        """What a view shows about an item in play."""
        row = self.row_of(index)
        return {
            "index": int(index),
            "row": row,
            "id": str(self.catalog.ids[row]),
            "description": str(self.catalog.descriptions[row]),
        }

    # --- dialogs -------------------------------------------------------------------------------
    def new_dialog(self, target: int | str | None = None) -> dict[str, Any]:
        """Deal a target (or use ``target``: an index in play or an item id) and a different
        first garment. An unfinished dialog is kept (``finished: false``) if it holds feedback,
        else dropped. Returns :meth:`state`."""
        with self.lock:
            t = self.resolve_item(target) if target is not None else int(self.rng.integers(self.num_items))
            s = int(self.rng.integers(self.num_items - 1))
            s += s >= t
            current = self.dialog
            if current is not None and not current.finished and _has_feedback(current):
                self._retire(current)
            self._reset_seed = int(self.rng.integers(2**31))
            if self.human is not None:
                self.human.clear()
            self._pending = None
            agent_info = self.agent.describe()
            self.dialog = DialogRecord(
                id=uuid.uuid4().hex,
                created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                mode=self.mode,
                shopper="human" if self.mode == "human" else self.agent.shopper,
                agent=agent_info,
                env_id=self.agent.env_id,
                category=self.agent.category,
                max_turns=self.max_turns,
                catalog=catalog_identity(self.catalog),
                target_index=t,
                target_row=self.row_of(t),
                target_id=str(self.catalog.ids[self.row_of(t)]),
            )
            if self.mode == "human":
                # Announce the first garment; the env is reset once the person has answered.
                self._add_turn(s, similar_rank(self.env, s, t))
            else:
                obs, info = self.env.reset(seed=self._reset_seed, options={"target": t, "shown": s})
                self._after_env(obs, info)
                self._add_turn(int(info["shown"]), int(info["rank"]), caption=str(info["caption_text"]))
                self.retriever.reset(*self._batched(obs, info), np.ones(1, dtype=bool))
            return self.state()

    def submit(self, caption: str) -> dict[str, Any]:
        """Human mode: the person's feedback on the garment shown now. The agent reads it and
        the next garment is announced (or the dialog ends). Returns :meth:`state`.

        Raises:
            ValueError: the caption is empty, too long or not text (see
                :func:`~fiq_gym.users.human.clean_caption`).
            SessionStateError: not in human mode, no dialog, or the dialog is over.
        """
        with self.lock:
            if self.human is None:
                raise SessionStateError("this is a watch session: the simulated shopper gives the feedback")
            d = self._live_dialog()
            text = clean_caption(caption)
            turn = d.turns[-1]
            turn.caption = text
            turn.unknown_words = self.human.unknown_words(text)
            self.human.answer(d.target_row, turn.shown_row, text)
            try:
                if turn.turn == 0:
                    obs, info = self.env.reset(
                        seed=self._reset_seed, options={"target": d.target_index, "shown": turn.shown_index}
                    )
                    self.retriever.reset(*self._batched(obs, info), np.ones(1, dtype=bool))
                else:
                    obs, _, _, _, info = self.env.step(self._pending)
            except BaseException:
                turn.caption, turn.unknown_words = None, []
                self.human.clear()
                raise
            self._after_env(obs, info)
            self._announce_next()
            return self.state()

    def advance(self) -> dict[str, Any]:
        """Watch mode: the agent acts and the simulated shopper answers (one turn)."""
        with self.lock:
            if self.human is not None:
                raise SessionStateError("this is a human session: send the person's feedback with submit()")
            self._live_dialog()
            action = self._act()
            obs, _, terminated, truncated, info = self.env.step(action)
            self._after_env(obs, info)
            over = terminated or truncated
            self._add_turn(
                int(info["shown"]), int(info["rank"]), caption=None if over else str(info["caption_text"])
            )
            if over:
                self._finish(bool(info["is_success"]))
            return self.state()

    # --- state and saving ----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """``"idle"`` (no dialog yet), ``"awaiting_feedback"`` (human), ``"ready"`` (watch:
        :meth:`advance` plays the next turn), ``"found"`` or ``"out_of_turns"``."""
        d = self.dialog
        if d is None:
            return "idle"
        if d.finished:
            return "found" if d.success else "out_of_turns"
        return "awaiting_feedback" if self.mode == "human" else "ready"

    def state(self) -> dict[str, Any]:
        """Everything a view needs, JSON-able: target, current garment and rank, history."""
        with self.lock:
            d = self.dialog
            out: dict[str, Any] = {
                "mode": self.mode,
                "agent": self.agent.name,
                "num_items": self.num_items,
                "max_turns": self.max_turns,
                "status": self.status,
                "dialogs_finished": len(self.finished),
            }
            if d is None:
                return out
            current = d.turns[-1]
            out.update(
                dialog_id=d.id,
                target=self.item(d.target_index),
                turn=current.turn,
                shown=self.item(current.shown_index),
                rank=current.rank,
                percentile=current.percentile,
                history=[vars(t) | {"description": self.item(t.shown_index)["description"]} for t in d.turns],
            )
            return out

    @property
    def finished(self) -> list[DialogRecord]:
        """The dialogs that ended (target found or out of turns)."""
        return [d for d in self.past if d.finished]

    def dialogs(self) -> list[DialogRecord]:
        """Every dialog worth keeping: past ones, and the current one if it holds feedback."""
        with self.lock:
            out = list(self.past)
            d = self.dialog
            if d is not None and not d.finished and _has_feedback(d):
                out.append(d)
            return out

    def save(self, path: str | None = None) -> str:
        """Add :meth:`dialogs` to ``path`` (default: ``save_path``); a dialog already in the file
        is replaced, not repeated. Returns the path written."""
        with self.lock:
            target = path or self.save_path
            if not target:
                raise ValueError("no file to save to: pass a path")
            dialogs = self.dialogs()
            if not dialogs:
                raise SessionStateError("nothing to save yet: play a dialog first")
            append_dialogs(target, dialogs)
            return str(target)

    def close(self) -> None:
        self.env.close()

    # --- internals -----------------------------------------------------------------------------
    def _live_dialog(self) -> DialogRecord:
        if self.dialog is None:
            raise SessionStateError("no dialog yet: start one")
        if self.dialog.finished:
            raise SessionStateError("this dialog is over: start a new one")
        return self.dialog

    def _add_turn(self, shown: int, rank: int, caption: str | None = None) -> TurnRecord:
        d = self.dialog
        assert d is not None
        row = self.row_of(shown)
        turn = TurnRecord(
            turn=len(d.turns),
            shown_index=int(shown),
            shown_row=row,
            shown_id=str(self.catalog.ids[row]),
            rank=int(rank),
            percentile=float(rank_percentile(np.array([rank]), self.num_items)[0]),
            caption=caption,
        )
        d.turns.append(turn)
        return turn

    def _batched(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> tuple[dict, dict]:
        return (
            {k: np.asarray(v)[None] for k, v in obs.items()},
            {k: np.asarray([v]) for k, v in info.items()},
        )

    def _after_env(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self._obs, self._info = obs, info

    def _act(self) -> np.ndarray:
        assert self._obs is not None and self._info is not None
        return np.asarray(self.retriever.act(*self._batched(self._obs, self._info)))[0]

    def _announce(self, action: np.ndarray) -> tuple[int, int]:
        """The garment ``env.step(action)`` will show and the target's rank then, asked of the
        env itself (the code its ``step`` runs), before the person answers."""
        return step_outcome(self.env, action)

    def _announce_next(self) -> None:
        d = self.dialog
        assert d is not None and self.human is not None
        action = self._act()
        shown, rank = self._announce(action)
        turn = self._add_turn(shown, rank)
        found = shown == d.target_index
        if found or turn.turn >= self.max_turns:
            # Nobody is asked about the last garment: the dialog ends with this step.
            self.human.answer(d.target_row, turn.shown_row, "")
            _, _, terminated, truncated, info = self.env.step(action)
            if not (terminated or truncated):
                raise RuntimeError("the env did not end the dialog where the session expected it to")
            self._finish(bool(info["is_success"]))
        else:
            self._pending = action

    def _finish(self, success: bool) -> None:
        d = self.dialog
        assert d is not None
        d.success, d.finished = success, True
        self._pending = None
        self._retire(d)

    def _retire(self, d: DialogRecord) -> None:
        self.past.append(d)
        if self.save_path:
            append_dialogs(self.save_path, [d])


def _has_feedback(d: DialogRecord) -> bool:
    return any(t.caption for t in d.turns)
