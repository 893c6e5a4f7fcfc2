"""A benchmark run's outcome: each evaluation's record, what each agent's training cost, and
the means, paired differences and per-dialog outcomes computed from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiq_gym.benchmarks.dialog.presets import COMPARISONS, METRICS, Preset
from fiq_gym.envs.evaluation import EvaluationResult, paired_difference

__all__ = ["BenchmarkResult", "Budget", "Record"]


@dataclass
class Record:
    agent: str
    train_user: str
    eval_user: str
    seed: int
    result: EvaluationResult


@dataclass(frozen=True)
class Budget:
    """What an agent's training cost, printed beside its scores."""

    rounds: int = 0
    dialogs: int = 0
    env_steps: int = 0
    seconds: float | None = None  # None: loaded from the run directory's cache
    starts_from: str = "scratch"


@dataclass
class BenchmarkResult:
    preset: Preset
    records: list[Record] = field(default_factory=list)
    seconds: float = 0.0
    command: str = ""
    sealed: bool = True
    #: "process" (the agent in its own process), "sealed" or "none"; see fiq_gym.envs.evaluation
    isolation: str = "sealed"

    budgets: dict[tuple[str, str, int], Budget] = field(default_factory=dict)
    #: the named configuration played (fiq_gym.envs.configurations)
    configuration: str = "default"
    #: agents asked for but not run, with the reason (the reference agents on a catalog whose
    #: features their readout does not fit)
    skipped: dict[str, str] = field(default_factory=dict)

    def outcomes(
        self, agent: str, train_user: str, eval_user: str, metric: str, turn: int
    ) -> np.ndarray | None:
        """Per-dialog outcomes ``(seeds, dialogs)`` at ``turn``: ``"success"`` (target shown by
        then) or ``"R@10"`` (target in the top 10); None if the agent was not run."""
        records = sorted(
            (
                r
                for r in self.records
                if (r.agent, r.train_user, r.eval_user) == (agent, train_user, eval_user)
            ),
            key=lambda r: r.seed,
        )
        if not records:
            return None
        rows = []
        for r in records:
            if metric == "success":
                st = r.result.success_turn
                rows.append(((st >= 0) & (st <= turn)).astype(np.float64))
            else:
                rows.append((r.result.ranks[:, turn] < 10).astype(np.float64))
        return np.stack(rows)

    def comparisons(self, train_user: str, eval_user: str) -> list[dict[str, Any]]:
        """Paired differences (agent - against) at the last turn, over the same dialogs and
        seeds, with 95% bootstrap intervals (:func:`fiq_gym.envs.evaluation.paired_difference`)."""
        out = []
        turn = max(r.result.turns for r in self.records)
        for agent, against in COMPARISONS:
            row: dict[str, Any] = {"agent": agent, "against": against, "turn": turn}
            for metric in ("success", "R@10"):
                a = self.outcomes(agent, train_user, eval_user, metric, turn)
                b = self.outcomes(against, train_user, eval_user, metric, turn)
                if a is None or b is None or a.shape != b.shape:
                    break
                row[metric] = paired_difference(a, b, seed=2023)
            else:
                out.append(row)
        return out

    def aggregate(self) -> list[dict[str, Any]]:
        """Mean and std over seeds per (agent, train user, eval user, turn)."""
        groups: dict[tuple[str, str, str], list[Record]] = {}
        for r in self.records:
            groups.setdefault((r.agent, r.train_user, r.eval_user), []).append(r)
        rows = []
        for (agent, train_user, eval_user), records in groups.items():
            per_seed = [r.result.per_turn() for r in records]
            for t in range(len(per_seed[0])):
                row: dict[str, Any] = {
                    "agent": agent,
                    "train_user": train_user,
                    "eval_user": eval_user,
                    "turn": t,
                    "seeds": len(records),
                }
                for m in METRICS:
                    values = np.array([p[t][m] for p in per_seed])
                    row[m] = float(values.mean())
                    row[f"{m}_std"] = float(values.std())
                rows.append(row)
        return rows
