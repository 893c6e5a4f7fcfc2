"""Evaluate a retriever on a fixed set of dialogs: per-turn R@K, rank percentile, success.

Like the papers' fixed first-candidate files, an :class:`EvaluationSet` pins each episode's
target and first shown item, is generated from a seed and can be saved, so every agent is
compared on the same dialogs. :func:`evaluate` drives the native vector env (one batched
step for many dialogs) and refuses environments with a training-only opt-in switched on.

Agents follow the batched :class:`RetrievalAgent` protocol (see ``fiq_gym.agents``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from fiq_gym._atomic import atomic_write_json, atomic_write_text
from fiq_gym.jsonfile import read_json
from fiq_gym.metrics import rank_percentile

__all__ = ["EvaluationResult", "EvaluationSet", "RetrievalAgent", "evaluate"]

RECALL_KS = (1, 5, 10, 50)


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
        object.__setattr__(self, "targets", t)
        object.__setattr__(self, "shown", s)

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def generate(cls, num_items: int, episodes: int, seed: int = 0) -> EvaluationSet:
        """``episodes`` uniform targets, each with a different uniform first item."""
        if episodes < 1:
            raise ValueError(f"episodes must be positive, got {episodes}")
        rng = np.random.default_rng([0xE7A1, seed])
        targets = rng.integers(0, num_items, size=episodes)
        shown = rng.integers(0, num_items - 1, size=episodes)
        shown += shown >= targets
        return cls(targets, shown, num_items, seed)

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


@dataclass
class EvaluationResult:
    """Per-episode ranks by turn; turn 0 is the first shown item, before any action.

    ``ranks[e, t]`` is the target's rank after turn t (0 once the target has been shown);
    ``success_turn[e]`` is the turn the target was shown, or -1.
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
        rows = []
        for t in range(self.ranks.shape[1]):
            r = self.ranks[:, t]
            row: dict[str, float] = {"turn": t}
            for k in RECALL_KS:
                row[f"R@{k}"] = float(np.mean(r < k))
            row["mean_percentile"] = float(np.mean(rank_percentile(r, self.num_items)))
            row["success_rate"] = float(np.mean((self.success_turn >= 0) & (self.success_turn <= t)))
            rows.append(row)
        return rows

    @property
    def mean_turns_to_success(self) -> float:
        """Mean turn of success over the episodes that succeeded (NaN if none did)."""
        hits = self.success_turn[self.success_turn >= 0]
        return float(hits.mean()) if len(hits) else float("nan")

    def to_markdown(self) -> str:
        header = "| turn | " + " | ".join(f"R@{k}" for k in RECALL_KS) + " | mean percentile | success rate |"
        lines = [
            f"**{self.agent}** ({len(self.ranks)} episodes, {self.num_items} items)",
            "",
            header,
            "|---:|" + "---:|" * (len(RECALL_KS) + 2),
        ]
        for row in self.per_turn():
            cells = [f"{row[f'R@{k}']:.3f}" for k in RECALL_KS]
            lines.append(
                f"| {row['turn']} | "
                + " | ".join(cells)
                + f" | {row['mean_percentile']:.3f} | {row['success_rate']:.3f} |"
            )
        lines.append("")
        lines.append(f"mean turns to success: {self.mean_turns_to_success:.2f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def scalars(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat scalars for a TensorBoard writer: R@10 and mean percentile per turn, and the
        final turn's R@10 and success rate (``writer.add_scalar(name, value, step)``)."""
        rows = self.per_turn()
        out = {}
        for row in rows:
            t = int(row["turn"])
            out[f"{prefix}R@10_turn{t}"] = row["R@10"]
            out[f"{prefix}percentile_turn{t}"] = row["mean_percentile"]
        out[f"{prefix}R@10"] = rows[-1]["R@10"]
        out[f"{prefix}success_rate"] = rows[-1]["success_rate"]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "num_items": self.num_items,
            "episodes": len(self.ranks),
            "per_turn": self.per_turn(),
            "mean_turns_to_success": self.mean_turns_to_success,
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


def _training_opt_in(env: Any) -> str | None:
    """The name of a training-only opt-in the env has switched on, if any."""
    config = getattr(getattr(env, "unwrapped", env), "config", None)
    for name in ("expose_target", "lookahead"):
        if getattr(config, name, False):
            return name
    return None


def evaluate(
    agent: RetrievalAgent,
    env: str | gym.vector.VectorEnv,
    episodes: int | EvaluationSet = 1000,
    seed: int = 0,
    *,
    num_envs: int = 64,
    name: str | None = None,
    **env_kwargs: Any,
) -> EvaluationResult:
    """Run ``agent`` on a fixed evaluation set and return per-turn metrics.

    Args:
        agent: a :class:`RetrievalAgent` built for this env (same items in play).
        env: a registered id (a native vector env of ``num_envs`` is made with
            ``env_kwargs``), or a native vector env made by ``gym.make_vec``.
        episodes: the number of episodes of a set generated from ``seed``, or a set.
        seed: seeds the evaluation set and the env (the shopper's wording).
    """
    if isinstance(env, str):
        for opt_in in ("expose_target", "lookahead"):
            if env_kwargs.get(opt_in):
                raise ValueError(
                    f"evaluate() refuses {opt_in}=True: a training-only opt-in that reveals the target"
                )
        venv = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
        owned = True
    elif isinstance(env, gym.vector.VectorEnv):
        if env_kwargs:
            raise ValueError("env_kwargs only apply when env is given by id")
        venv, owned = env, False
    else:
        raise TypeError(
            f"evaluate() takes an env id or a vector env made with gym.make_vec(..., vectorization_mode='vector_entry_point'), got {type(env).__name__}"
        )
    opt_in = _training_opt_in(venv)
    if opt_in:
        raise ValueError(
            f"evaluate() refuses an environment with {opt_in}=True: a training-only opt-in that reveals the target"
        )
    inner = venv.unwrapped
    num_items = int(inner.num_items)
    eval_set = (
        episodes if isinstance(episodes, EvaluationSet) else EvaluationSet.generate(num_items, episodes, seed)
    )
    if eval_set.num_items != num_items:
        raise ValueError(
            f"the evaluation set was made for {eval_set.num_items} items, the env has {num_items}"
        )
    b = venv.num_envs
    turns = int(inner.config.max_turns)
    ranks = np.zeros((len(eval_set), turns + 1), dtype=np.int64)
    success_turn = np.full(len(eval_set), -1, dtype=np.int64)
    try:
        for start in range(0, len(eval_set), b):
            idx = np.arange(start, min(start + b, len(eval_set)))
            pad = np.resize(idx, b)  # fill the last batch by repeating; extra rows are ignored
            obs, info = venv.reset(
                seed=seed + start, options={"target": eval_set.targets[pad], "shown": eval_set.shown[pad]}
            )
            if "target" in info:
                raise ValueError("evaluate() refuses an environment whose info reveals the target")
            agent.reset(obs, info, np.ones(b, dtype=bool))
            active = np.ones(b, dtype=bool)
            ranks[idx, 0] = info["rank"][: len(idx)]
            for t in range(1, turns + 1):
                obs, _, terminated, truncated, info = venv.step(agent.act(obs, info))
                live = active[: len(idx)]
                ranks[idx[live], t] = info["rank"][: len(idx)][live]
                hit = terminated[: len(idx)] & live
                success_turn[idx[hit]] = t
                active &= ~(terminated | truncated)
                if not active.any():
                    break
            # After success the dialog is over and the target counts as found.
            for e in idx:
                if success_turn[e] >= 0:
                    ranks[e, success_turn[e] :] = 0
    finally:
        if owned:
            venv.close()
    meta = {
        "seed": seed,
        "episodes": len(eval_set),
        "max_turns": turns,
        "env": env if isinstance(env, str) else type(inner).__name__,
    }
    return EvaluationResult(name or type(agent).__name__, ranks, success_turn, num_items, meta)


def compare(results: Sequence[EvaluationResult], turn: int | None = None) -> str:
    """A markdown table with one row per agent at ``turn`` (default: the last)."""
    header = "| agent | " + " | ".join(f"R@{k}" for k in RECALL_KS) + " | mean percentile | success rate |"
    lines = [header, "|---|" + "---:|" * (len(RECALL_KS) + 2)]
    for r in results:
        row = r.per_turn()[r.turns if turn is None else turn]
        lines.append(
            f"| {r.agent} | "
            + " | ".join(f"{row[f'R@{k}']:.3f}" for k in RECALL_KS)
            + f" | {row['mean_percentile']:.3f} | {row['success_rate']:.3f} |"
        )
    return "\n".join(lines)
