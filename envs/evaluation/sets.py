"""Evaluation data: fixed dialog sets, per-turn R@K, cumulative Hits@K, rank percentile,
success, the best log-rank integral (BRI), and what an evaluated agent may see.

Like the papers' fixed first-candidate files, an :class:`EvaluationSet` pins each episode's
target and first shown item, is generated from a seed and can be saved, so every agent is
compared on the same dialogs. :class:`EvaluationDialogs` plays a set on a native vector env
and hands agents only observations and :func:`public_info`; :func:`play_dialogs` is the
agent's side. The harness that builds the environments, in this process or sealed in
another, is :func:`fiq_gym.envs.evaluation.evaluate` (:mod:`fiq_gym.envs.evaluation.harness`);
this module is given them and never constructs one.

Agents follow the batched :class:`RetrievalAgent` protocol (see ``fiq_gym.agents``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from fiq_gym.errors import EvaluationTimeout
from fiq_gym.metrics import best_log_rank_integral, cumulative_hits_at_k, rank_percentile
from fiq_gym.utils.atomic import atomic_write_json, atomic_write_text
from fiq_gym.utils.jsonfile import read_json
from fiq_gym.utils.links import doc_url

__all__ = [
    "PUBLIC_INFO_KEYS",
    "EvaluationDialogs",
    "EvaluationResult",
    "EvaluationSet",
    "HeldOutSeed",
    "PublicInfo",
    "RetrievalAgent",
    "compare",
    "dialog_turns",
    "evaluate_in_process",
    "human_meta",
    "human_share_by_turn",
    "play_dialogs",
    "public_info",
    "training_evaluation_seed",
]

RECALL_KS = (1, 5, 10, 50)
#: Trainers evaluate a run of ``--seed S`` on the dialogs of seed ``TRAINING_EVALUATION_OFFSET +
#: S``: far from the seeds training episodes are drawn from, and the same for every trainer, so
#: evaluations during a run compare, and ``fiq-gym eval`` can replay a run's own set.
TRAINING_EVALUATION_OFFSET = 10_000


def training_evaluation_seed(seed: int) -> int:
    """The evaluation set's seed of a training run started with ``seed`` (see
    :data:`TRAINING_EVALUATION_OFFSET`)."""
    return TRAINING_EVALUATION_OFFSET + int(seed)


#: (key of a :meth:`EvaluationResult.per_turn` row, column title) in the order tables show
#: them: cumulative Hits@K beside R@K, BRI (lower is better) last.
TABLE_COLUMNS = (
    *((f"R@{k}", f"R@{k}") for k in RECALL_KS),
    *((f"Hits@{k}", f"Hits@{k}") for k in RECALL_KS),
    ("mean_percentile", "mean percentile"),
    ("success_rate", "success rate"),
    ("BRI", "BRI"),
)
#: what the tables' columns mean, printed under them
TABLE_LEGEND = (
    "R@K: target in the top K after that turn; Hits@K: in the top K at any turn so far; "
    "BRI: best log-rank integral over turns 0..t, lower is better "
    f"({doc_url('docs/benchmarks.md', 'metrics')})"
)


def _table(first: str, rows: Sequence[tuple[str, dict[str, float]]]) -> list[str]:
    """A markdown table: ``first`` column (turn or agent), then :data:`TABLE_COLUMNS`."""
    align = "---:" if first == "turn" else "---"
    lines = [
        f"| {first} | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        f"|{align}|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(f"{row[key]:.3f}" for key, _ in TABLE_COLUMNS) + " |")
    return lines


@runtime_checkable
class RetrievalAgent(Protocol):
    """A batched retriever: B dialogs at once, plain Gymnasium data only.

    ``reset`` is told which rows began a new dialog (``mask``) with their first observation;
    ``act`` returns one action per row (B,) or (B, dim).
    """

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None: ...

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray: ...


@dataclass(frozen=True)
class EvaluationSet:
    """Fixed (target, first shown) pairs, as indices of the items in play."""

    targets: np.ndarray
    shown: np.ndarray
    num_items: int
    seed: int | None = None

    def __post_init__(self) -> None:
        t, s = np.asarray(self.targets, np.int64), np.asarray(self.shown, np.int64)
        if t.shape != s.shape or t.ndim != 1 or len(t) == 0:
            raise ValueError(
                f"targets and shown must be equal-length 1-D arrays, got {t.shape} and {s.shape}"
            )
        if t.min() < 0 or s.min() < 0 or max(t.max(), s.max()) >= self.num_items:
            raise ValueError(f"evaluation indices must lie in [0, {self.num_items - 1}]")
        same = np.flatnonzero(t == s)
        if len(same):
            raise ValueError(
                f"evaluation dialog {same[0]} starts by showing its target (item {t[same[0]]}): "
                "every first item must differ from its target; regenerate the set"
            )
        object.__setattr__(self, "targets", t)
        object.__setattr__(self, "shown", s)

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def generate(
        cls,
        num_items: int,
        episodes: int,
        seed: int = 0,
        starts: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> EvaluationSet:
        """``episodes`` uniform targets, each with a different uniform first item; with
        ``starts`` ((targets, shown) indices in play: an env's ``start_pairs``), ``episodes``
        of those pairs, each once in a seeded order (then each again, in another order, if
        more episodes than pairs are asked for): as many episodes as pairs play every pair
        once, the papers' protocol."""
        if episodes < 1:
            raise ValueError(f"episodes must be positive, got {episodes}")
        rng = np.random.default_rng([0xE7A1, seed])
        if starts is not None:
            pairs = len(starts[0])
            order = np.concatenate([rng.permutation(pairs) for _ in range(-(-episodes // pairs))])[:episodes]
            return cls(np.asarray(starts[0])[order], np.asarray(starts[1])[order], num_items, seed)
        targets = rng.integers(0, num_items, size=episodes)
        shown = rng.integers(0, num_items - 1, size=episodes)
        shown += shown >= targets
        return cls(targets, shown, num_items, seed)

    @classmethod
    def for_env(cls, env: Any, episodes: int, seed: int = 0) -> EvaluationSet:
        """The set the harness plays on ``env`` (a single or vector env, wrapped or not):
        :meth:`generate` over its items in play, from its annotated start pairs when it has
        ``start="annotated"``."""
        inner = getattr(env, "unwrapped", env)
        return cls.generate(int(inner.num_items), episodes, seed, getattr(inner, "start_pairs", None))

    def save(self, path: str | os.PathLike) -> Path:
        data = {
            "format": "fiq-gym-evaluation-set",
            "version": 1,
            "num_items": self.num_items,
            "seed": self.seed,
            "targets": self.targets.tolist(),
            "shown": self.shown.tolist(),
        }
        atomic_write_json(path, data)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvaluationSet:
        path = Path(path)
        data = read_json(
            path,
            ValueError,
            "regenerate the evaluation set",
            missing="make an evaluation set with EvaluationSet.generate(...).save(path)",
        )
        if not isinstance(data, dict) or data.get("format") != "fiq-gym-evaluation-set":
            raise ValueError(f"{path} is not a fiq-gym evaluation set")
        return cls(
            np.array(data["targets"]), np.array(data["shown"]), int(data["num_items"]), data.get("seed")
        )


#: the environment variable :meth:`HeldOutSeed.from_environment` reads; never passed on to an
#: agent's process
HELD_OUT_VARIABLE = "FIQ_GYM_HELD_OUT_SEED"


@dataclass(frozen=True, repr=False)
class HeldOutSeed:
    """A seed the evaluated agent cannot know, for a held-out evaluation set.

    The evaluation set and the env's seeds come from ``value`` as from a public seed, but
    results record only :attr:`fingerprint` (results on the same held-out set share it), and
    the harness accepts it only in an isolated evaluation (``isolation="process"``), where
    the agent's process cannot read the evaluator's memory. A public seed is like public test
    labels: anyone can regenerate its targets. Keep the value where the agent's process
    cannot read it: :data:`HELD_OUT_VARIABLE` (the agent's process does not inherit it and
    cannot read the evaluator's environment), or a file owned by another account.
    """

    value: int

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value < 0:
            raise ValueError(f"a held-out seed is a non-negative integer, got {self.value!r}")

    @property
    def fingerprint(self) -> str:
        """12 hex digits that name the set without revealing the seed."""
        return hashlib.sha256(f"fiq-gym held-out set {self.value}".encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"HeldOutSeed(fingerprint={self.fingerprint!r})"

    @classmethod
    def parse(cls, text: str, where: str) -> HeldOutSeed:
        try:
            return cls(int(text.strip()))
        except ValueError:
            raise ValueError(
                f"{where} must hold one non-negative integer (the held-out seed); write one, e.g. "
                "python -c 'import secrets; print(secrets.randbelow(2**62))'"
            ) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> HeldOutSeed:
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"held-out seed file {path} does not exist: write the seed into it first"
            ) from None
        except UnicodeDecodeError:
            text = "?"
        return cls.parse(text, f"held-out seed file {path}")

    @classmethod
    def from_environment(cls, name: str = HELD_OUT_VARIABLE) -> HeldOutSeed:
        if name not in os.environ:
            raise ValueError(f"the environment variable {name} is not set: export the held-out seed in it")
        return cls.parse(os.environ[name], f"the environment variable {name}")


@dataclass
class EvaluationResult:
    """Per-episode ranks by turn; turn 0 is the first shown item, before any action.

    ``ranks[e, t]`` is the target's rank after turn t (0 once the target has been shown);
    ``success_turn[e]`` is the turn the target was shown, or -1. Turn 0's rank is the
    target's by similarity to the evaluation set's first item, the same for every agent: no
    caption has been read yet (ChatIR's round 0, by contrast, already retrieves with the
    image's description; docs/benchmarks.md, "Metrics").
    """

    agent: str
    ranks: np.ndarray
    success_turn: np.ndarray
    num_items: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def turns(self) -> int:
        return self.ranks.shape[1] - 1

    def per_turn(self) -> list[dict[str, float]]:
        """One row per turn 0..T: ``R@K`` (target in the top K after turn t), mean percentile,
        success rate, cumulative ``Hits@K`` (in the top K at any turn <= t) and ``BRI`` (the
        best log-rank integral of turns 0..t, so the last row's is :attr:`bri`).

        The keys added later (``Hits@K``, ``BRI``) come after the older ones, so CSV columns
        keep their positions.
        """
        hits = {k: cumulative_hits_at_k(self.ranks, k) for k in RECALL_KS}
        rows = []
        for t in range(self.ranks.shape[1]):
            r = self.ranks[:, t]
            row: dict[str, float] = {"turn": t}
            for k in RECALL_KS:
                row[f"R@{k}"] = float(np.mean(r < k))
            row["mean_percentile"] = float(np.mean(rank_percentile(r, self.num_items)))
            row["success_rate"] = float(np.mean((self.success_turn >= 0) & (self.success_turn <= t)))
            for k in RECALL_KS:
                row[f"Hits@{k}"] = float(hits[k][t])
            row["BRI"] = best_log_rank_integral(self.ranks[:, : t + 1])
            rows.append(row)
        return rows

    @property
    def bri(self) -> float:
        """Mean best log-rank integral over turns 0..T (lower is better; see
        :func:`fiq_gym.metrics.best_log_rank_integral`)."""
        return best_log_rank_integral(self.ranks)

    @property
    def mean_turns_to_success(self) -> float:
        """Mean turn of success over the episodes that succeeded (NaN if none did)."""
        hits = self.success_turn[self.success_turn >= 0]
        return float(hits.mean()) if len(hits) else float("nan")

    def to_markdown(self) -> str:
        lines = [
            f"**{self.agent}** ({len(self.ranks)} episodes, {self.num_items} items)",
            "",
            *_table("turn", [(str(row["turn"]), row) for row in self.per_turn()]),
            "",
            f"mean turns to success: {self.mean_turns_to_success:.2f}; BRI: {self.bri:.3f}",
            *self._human_line(),
            "",
            TABLE_LEGEND,
        ]
        return "\n".join(lines)

    def _human_line(self) -> list[str]:
        shares = self.meta.get("human_captions")
        if shares is None:
            return []
        cells = ", ".join("-" if x is None else f"{x:.3f}" for x in shares)
        return [f"human captions by turn 0..{len(shares) - 1} (the rest the shopper's fallback): {cells}"]

    def __str__(self) -> str:
        return self.to_markdown()

    def scalars(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat scalars for a TensorBoard writer: R@10 and mean percentile per turn, and the
        final turn's R@10, cumulative Hits@10, success rate and the BRI
        (``writer.add_scalar(name, value, step)``)."""
        rows = self.per_turn()
        out = {}
        for row in rows:
            t = int(row["turn"])
            out[f"{prefix}R@10_turn{t}"] = row["R@10"]
            out[f"{prefix}percentile_turn{t}"] = row["mean_percentile"]
        out[f"{prefix}R@10"] = rows[-1]["R@10"]
        out[f"{prefix}success_rate"] = rows[-1]["success_rate"]
        out[f"{prefix}Hits@10"] = rows[-1]["Hits@10"]
        out[f"{prefix}BRI"] = self.bri
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "num_items": self.num_items,
            "episodes": len(self.ranks),
            "per_turn": self.per_turn(),
            "mean_turns_to_success": self.mean_turns_to_success,
            "bri": self.bri,
            "meta": self.meta,
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        atomic_write_json(path, self.to_json())
        return Path(path)

    def save_csv(self, path: str | os.PathLike) -> Path:
        rows = self.per_turn()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["agent", *rows[0].keys()])
        writer.writeheader()
        for row in rows:
            writer.writerow({"agent": self.agent, **row})
        atomic_write_text(path, buffer.getvalue())
        return Path(path)


TRAINING_OPT_INS = ("expose_target", "lookahead")

# What an evaluated agent may read in ``info``: never rank, percentile or reward, which give
# the target away together with the gallery (see docs/agents.md, "Threat model").
# ``candidates`` (shortlist mode) are the items the first stage proposed without the target;
# ``slate`` and ``slate_pick`` (slate mode) are what the agent showed and the shopper's pick,
# feedback like the caption.
PUBLIC_INFO_KEYS = ("caption_text", "shown", "dialog_turn", "is_success", "candidates", "slate", "slate_pick")


class PublicInfo(dict):
    """The filtered ``info`` an evaluated agent gets: caption text, shown item, turn and
    whether the dialog ended in success; asking for anything else names the rule."""

    def __missing__(self, key: Any) -> Any:
        raise KeyError(
            f"info[{key!r}] is withheld during evaluation: agents read only {list(PUBLIC_INFO_KEYS)} "
            "(rank, percentile and reward reveal the target; see "
            f"{doc_url('docs/agents.md', 'what-agents-may-read-the-threat-model')})"
        )


def public_info(info: dict[str, Any]) -> PublicInfo:
    """The keys of a (vector) env's ``info`` that an evaluated agent may read, copied."""
    return PublicInfo({k: np.array(info[k], copy=True) for k in PUBLIC_INFO_KEYS if k in info})


def dialog_turns(info: dict[str, Any], reader: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shown, turn, caption text)``, one entry per dialog, from a (vector) env's public
    ``info``, for an agent that reads the captions; ``reader`` names it in the error raised
    when the env does not give the text."""
    if "caption_text" not in info:
        raise ValueError(
            f"the {reader} reads info['caption_text']; make the env with caption_text=True (the default)"
        )
    return (
        np.atleast_1d(info["shown"]),
        np.atleast_1d(info["dialog_turn"]),
        np.atleast_1d(info["caption_text"]),
    )


def training_opt_in(env: Any) -> str | None:
    """The name of a training-only opt-in the env has switched on, if any."""
    config = getattr(getattr(env, "unwrapped", env), "config", None)
    for name in TRAINING_OPT_INS:
        if getattr(config, name, False):
            return name
    return None


def refuse_training_opt_ins(env_kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` if the env arguments switch on a training-only opt-in."""
    for name in TRAINING_OPT_INS:
        if env_kwargs.get(name):
            raise ValueError(
                f"evaluate() refuses {name}=True: a training-only opt-in that reveals the target"
            )


class EvaluationDialogs:
    """The environment side of an evaluation: plays ``eval_set`` on a native vector env in
    batches of ``num_envs`` and keeps the ranks to itself.

    What it hands out (observations and :func:`public_info`) is all an agent may see, so
    the in-process harness and the sealed one (this object in a child process) give agents
    the same data. Ranks leave it only through :meth:`result`, after the last dialog.
    """

    def __init__(self, venv: gym.vector.VectorEnv, eval_set: EvaluationSet, seed: int) -> None:
        opt_in = training_opt_in(venv)
        if opt_in:
            raise ValueError(
                f"evaluate() refuses an environment with {opt_in}=True: a training-only opt-in that reveals the target"
            )
        inner: Any = venv.unwrapped  # a native vector env of any version, read for its size and rules
        self.num_items = int(inner.num_items)
        if eval_set.num_items != self.num_items:
            raise ValueError(
                f"the evaluation set was made for {eval_set.num_items} items, the env has {self.num_items}"
            )
        self._venv, self._set, self._seed = venv, eval_set, seed
        self.num_envs = int(venv.num_envs)
        self.turns = int(inner.config.max_turns)
        self.num_batches = -(-len(eval_set) // self.num_envs)
        self._ranks = np.zeros((len(eval_set), self.turns + 1), dtype=np.int64)
        self._success_turn = np.full(len(eval_set), -1, dtype=np.int64)
        # 1 where dialog e's caption at turn t was human text, 0 where not, -1 not played;
        # None for a shopper that does not replay a dataset (no ``info["human_caption"]``).
        self._human: np.ndarray | None = None
        self._idx = np.zeros(0, dtype=np.int64)
        self._active = np.zeros(self.num_envs, dtype=bool)
        self._turn = 0

    def reset(self, batch: int) -> tuple[dict[str, np.ndarray], PublicInfo]:
        """Start batch ``batch`` of the set; return its first observations."""
        b, start = self.num_envs, batch * self.num_envs
        self._idx = np.arange(start, min(start + b, len(self._set)))
        pad = np.resize(self._idx, b)  # fill the last batch by repeating; extra rows are ignored
        obs, info = self._venv.reset(
            seed=self._seed + start, options={"target": self._set.targets[pad], "shown": self._set.shown[pad]}
        )
        if "target" in info:
            raise ValueError("evaluate() refuses an environment whose info reveals the target")
        self._ranks[self._idx, 0] = info["rank"][: len(self._idx)]
        if "human_caption" in info:
            if self._human is None:
                self._human = np.full(self._ranks.shape, -1, dtype=np.int8)
            self._human[self._idx, 0] = info["human_caption"][: len(self._idx)]
        self._active = np.ones(b, dtype=bool)
        self._turn = 0
        return obs, public_info(info)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], PublicInfo, bool]:
        """One turn of the batch; the flag says whether the batch is over."""
        idx, n = self._idx, len(self._idx)
        obs, _, terminated, truncated, info = self._venv.step(actions)
        self._turn += 1
        t = self._turn
        live = self._active[:n]
        self._ranks[idx[live], t] = info["rank"][:n][live]
        if self._human is not None and "human_caption" in info:
            self._human[idx[live], t] = np.asarray(info["human_caption"])[:n][live]
        hit = np.asarray(info["is_success"], dtype=bool)[:n] & live
        self._success_turn[idx[hit]] = t
        self._active &= ~(terminated | truncated)
        done = t >= self.turns or not self._active.any()
        if done:
            # After success the dialog is over and the target counts as found.
            for e in idx:
                if self._success_turn[e] >= 0:
                    self._ranks[e, self._success_turn[e] :] = 0
        return obs, public_info(info), done

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ranks, success turns) of every dialog of the set."""
        return self._ranks, self._success_turn

    def human_captions(self) -> np.ndarray | None:
        """(episodes, turns + 1) int8: 1 where the caption of that turn was recorded human
        text, 0 where not (the fallback's, or "is the same"), -1 for turns not played; None
        when the shopper replays no dataset."""
        return self._human


def human_share_by_turn(human: np.ndarray | None) -> list[float | None] | None:
    """Per turn, the share of the dialogs that played it whose caption was human text
    (None for a turn no dialog played), from :meth:`EvaluationDialogs.human_captions`."""
    if human is None:
        return None
    played = human >= 0
    counts = played.sum(axis=0)
    return [
        None if counts[t] == 0 else float((human[:, t] == 1).sum() / counts[t]) for t in range(human.shape[1])
    ]


def human_meta(human: np.ndarray | None) -> dict[str, Any]:
    """The result's ``meta`` entry for the human share by turn (nothing without a dataset shopper)."""
    shares = human_share_by_turn(human)
    return {} if shares is None else {"human_captions": shares}


#: seconds an agent's ``act()`` may take for one turn of a batch before the evaluation ends
#: (the slowest published agent, posterior-lookahead on 100,000 items, needs about 7 s for 64 dialogs)
TURN_TIMEOUT = 600.0


@contextlib.contextmanager
def _turn_budget(seconds: float | None, turn: int) -> Iterator[None]:
    """Raise :class:`~fiq_gym.errors.EvaluationTimeout` in this thread if the block runs
    longer than ``seconds``: an interval timer and SIGALRM, so only on the main thread of a
    platform that has them (elsewhere the block runs without a budget, as documented)."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise EvaluationTimeout(
            f"the agent's act() did not return within {seconds:g} s at turn {turn}: the evaluation "
            "stopped (raise the budget with turn_timeout=, or --turn-timeout on the command line)"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def play_dialogs(agent: RetrievalAgent, dialogs: Any, turn_timeout: float | None = None) -> None:
    """The agent side of an evaluation: drive ``dialogs`` (an :class:`EvaluationDialogs`, or
    its stand-in in another process) batch by batch. The agent sees nothing else.
    ``turn_timeout``: seconds each ``act()`` may take (on the main thread; see
    :data:`TURN_TIMEOUT`), None for no budget."""
    for batch in range(dialogs.num_batches):
        obs, info = dialogs.reset(batch)
        agent.reset(obs, info, np.ones(dialogs.num_envs, dtype=bool))
        done, turn = False, 1
        while not done:
            with _turn_budget(turn_timeout, turn):
                actions = agent.act(obs, info)
            obs, info, done = dialogs.step(actions)
            turn += 1


def evaluate_in_process(
    agent: RetrievalAgent,
    venv: gym.vector.VectorEnv,
    episodes: int | EvaluationSet,
    seed: int,
    name: str | None = None,
    env_label: str | None = None,
    *,
    turn_timeout: float | None = None,
) -> EvaluationResult:
    """Play an evaluation set with ``agent`` on ``venv`` in this process (unsealed: the agent
    could reach the env object; use it to debug, publish with the sealed harness)."""
    inner: Any = venv.unwrapped  # a native vector env of any version, read for its size and rules
    num_items = int(inner.num_items)
    eval_set = (
        episodes if isinstance(episodes, EvaluationSet) else EvaluationSet.for_env(venv, episodes, seed)
    )
    dialogs = EvaluationDialogs(venv, eval_set, seed)
    play_dialogs(agent, dialogs, turn_timeout)
    ranks, success_turn = dialogs.result()
    meta: dict[str, Any] = {
        "seed": seed,
        "set": "public",
        "episodes": len(eval_set),
        "max_turns": dialogs.turns,
        "env": env_label or type(venv.unwrapped).__name__,
        "sealed": False,
        **human_meta(dialogs.human_captions()),
    }
    return EvaluationResult(name or type(agent).__name__, ranks, success_turn, num_items, meta)


def compare(results: Sequence[EvaluationResult], turn: int | None = None) -> str:
    """A markdown table with one row per agent at ``turn`` (default: the last); its BRI
    covers turns 0..turn."""
    rows = [(r.agent, r.per_turn()[r.turns if turn is None else turn]) for r in results]
    return "\n".join(_table("agent", rows))
