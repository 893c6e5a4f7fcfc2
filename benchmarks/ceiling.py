"""How far from the best possible: the posterior reader on the leaderboard's dialogs.

    python -m fiq_gym.benchmarks.ceiling                       # results/ceiling.md and .json
    python -m fiq_gym.benchmarks.ceiling --configurations default --seeds 0 --episodes 200 --out /tmp/c

For each leaderboard configuration it evaluates the posterior agent
(:mod:`fiq_gym.agents.posterior`: it reads the template shopper's captions with the shopper's
own likelihood and shows the most probable unseen item) through the sealed harness, on the
published leaderboard's evaluation set (``EvaluationSet.generate(N, 1000, seed=2021)``) and
env seeds (0, 1, 2), so every dialog pairs with the same dialog of every published agent. Three
rows: ``posterior-map`` and ``posterior-lookahead`` (what any agent sees: gallery features and
predicted attribute scores; the second plans one step ahead) and ``posterior-map (labels)`` (the
catalog's labels: the cost of predicting them, not an evaluable agent). The ceiling line is the
better evaluable row; for every published agent the table gives the share of the headroom it
closes over the greedy first stage (``shortlist-greedy``). Paired bootstrap intervals over
seeds and dialogs split the headroom: reading the captions (map - the best published agent) and
planning what to show (lookahead - map). It also times the agents alone: milliseconds per
dialog and turn.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.posterior import posterior_agent
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    git_revision,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.evaluation import EvaluationSet, evaluate, paired_difference
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["CONFIGURATION_RUNS", "main"]

#: configuration -> (env id, published leaderboard folder)
CONFIGURATION_RUNS = {
    "default": ("fiq_gym/FashionIQ-v3", "leaderboard"),
    "terse": ("fiq_gym/FashionIQTerse-v3", "leaderboard-terse"),
    "100k": ("fiq_gym/FashionIQ100k-v3", "leaderboard-100k"),
}
#: row -> (policy, beliefs); the evaluable rows come first (the ceiling is the better of them)
ROWS = {
    "posterior-map": ("map", "predicted"),
    "posterior-lookahead": ("lookahead", "predicted"),
    "posterior-map (labels)": ("map", "labels"),
}
EVALUABLE = ("posterior-map", "posterior-lookahead")
EVAL_SEED = 2021  # the leaderboard's evaluation set (benchmarks/dialog.py)
GREEDY = "shortlist-greedy"


def success_by(success_turn: np.ndarray, turn: int) -> np.ndarray:
    """(..., dialogs) 1.0 where the target was shown by ``turn``."""
    return ((success_turn >= 1) & (success_turn <= turn)).astype(np.float64)


def metrics(success_turn: np.ndarray, ranks: np.ndarray) -> dict[str, float]:
    """Success by turns 3 and 5, its mean over turns 1-5, and R@10 at turn 5, one run."""
    return {
        "success@3": float(success_by(success_turn, 3).mean()),
        "success@5": float(success_by(success_turn, 5).mean()),
        "success 1-5": float(np.mean([success_by(success_turn, t).mean() for t in range(1, 6)])),
        "R@10@5": float(np.mean(ranks[:, 5] < 10)),
    }


def published_runs(results: Path, folder: str) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """agent -> seed -> {success_turn, ranks} of a published leaderboard run."""
    data = json.loads((results / folder / "dialog.json").read_text(encoding="utf-8"))
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for run in data["runs"]:
        if run["train_user"] != "template" or run["eval_user"] != "template":
            continue
        out.setdefault(run["agent"], {})[int(run["seed"])] = {
            "success_turn": np.asarray(run["success_turn"], dtype=np.int64),
            "ranks": np.asarray(run["ranks"], dtype=np.int64),
            "revision": data["git_revision"],
        }
    return out


def agent_milliseconds(env_id: str, policy: str = "map", dialogs: int = 64, turns: int = 5) -> float:
    """The posterior agent's own time per dialog and turn (its ``act``, env time excluded)."""
    venv = gym.make_vec(env_id, num_envs=dialogs, vectorization_mode="vector_entry_point")
    try:
        agent = posterior_agent(venv, policy)
        obs, info = venv.reset(seed=0)
        agent.reset(obs, info, np.ones(dialogs, dtype=bool))
        spent = 0.0
        for _ in range(turns):
            start = time.perf_counter()
            action = agent.act(obs, info)
            spent += time.perf_counter() - start
            obs, _, _, _, info = venv.step(action)
        return 1000 * spent / (dialogs * turns)
    finally:
        venv.close()


def run(configuration: str, seeds: Sequence[int], episodes: int, results: Path) -> dict[str, Any]:
    env_id, folder = CONFIGURATION_RUNS[configuration]
    published = published_runs(results, folder)
    venv = gym.make_vec(env_id, num_envs=64, vectorization_mode="vector_entry_point")
    try:
        eval_set = EvaluationSet.generate(inner_env(venv).num_items, episodes, seed=EVAL_SEED)
        rows: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        for name, (policy, beliefs) in ROWS.items():
            rows[name] = {}
            for seed in seeds:
                result = evaluate(
                    posterior_agent(venv, policy, beliefs=beliefs, seed=seed),
                    env_id,
                    eval_set,
                    seed=seed,
                    name=name,
                )
                rows[name][seed] = {"success_turn": result.success_turn, "ranks": result.ranks}
                print(
                    f"{configuration:<8} {name:<24} seed {seed}: {metrics(result.success_turn, result.ranks)}",
                    flush=True,
                )
    finally:
        venv.close()
    if episodes == len(next(iter(published.values()))[0]["success_turn"]):
        rows.update({agent: runs for agent, runs in published.items() if set(seeds) <= set(runs)})
    return {
        "env_id": env_id,
        "folder": folder,
        "rows": rows,
        "num_items": eval_set.num_items,
        "ms_per_dialog_turn": {policy: agent_milliseconds(env_id, policy) for policy in ("map", "lookahead")},
    }


def _stack(runs: dict[int, dict[str, np.ndarray]], seeds: Sequence[int], key: str) -> np.ndarray:
    return np.stack([runs[s][key] for s in seeds])


def ceiling_row(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """The ceiling: the evaluable posterior policy with the higher success by turn 5."""
    return max((n for n in EVALUABLE if n in summary), key=lambda n: summary[n]["success@5"][0])


def paired(rows: dict, better: str, worse: str, seeds: Sequence[int], turn: int | None) -> str:
    """``better - worse`` paired over seeds and dialogs: success by ``turn`` (None: the mean
    over turns 1-5)."""

    def score(name: str) -> np.ndarray:
        found = _stack(rows[name], seeds, "success_turn")
        if turn is not None:
            return success_by(found, turn)
        return np.mean([success_by(found, t) for t in range(1, 6)], axis=0)

    return str(paired_difference(score(better), score(worse), seed=2023))


def to_markdown(measured: dict[str, dict[str, Any]], seeds: Sequence[int], meta: dict[str, str]) -> str:
    lines = [
        "# How far from the best possible: the posterior reader",
        "",
        f"Command: `{meta['command']}`  ",
        f"Revision: {meta['revision']}  ",
        f"Load average (1, 5, 15 min) when the run started: {meta['load']}",
        "",
        "The posterior agent reads each caption with the template shopper's own likelihood "
        "(`fiq_gym.agents.posterior`). `posterior-map` shows the most probable unseen item; "
        "`posterior-lookahead` plans one step: among the 6 most probable unseen items it shows the "
        "one that maximises the expected number of remaining turns with the target found, counting "
        "what the shopper's answer about it lets `map` find next (a Monte Carlo estimate over 24 "
        "targets drawn from the belief). Both see only what any agent sees (gallery features, "
        "predicted attribute scores; category and luma through a readout fitted on the training "
        "catalog of seed 1); `posterior-map (labels)` reads the catalog's labels instead, which "
        "measures what predicting them costs and is not an evaluable agent. The ceiling is the "
        "evaluable posterior policy with the higher success@5. Same evaluation set (1,000 dialogs, "
        f"seed {EVAL_SEED}) and env seeds {list(seeds)} as the published leaderboard, through the "
        "sealed harness; cells are mean ± std over the env seeds. The other rows are the "
        "leaderboard's published runs (3 training seeds, the same dialogs). Headroom closed: "
        "(agent - greedy first stage) / (ceiling - greedy first stage), success by turn 5. "
        "Intervals: paired bootstrap over seeds and dialogs, 95%.",
    ]
    for configuration, data in measured.items():
        rows = data["rows"]
        greedy = rows.get(GREEDY)
        lines += [
            "",
            f"## {configuration} (`{data['env_id']}`)",
            "",
            "| agent | success@3 | success@5 | success, mean over turns 1-5 | R@10 at turn 5 | headroom closed |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        summary: dict[str, dict[str, tuple[float, float]]] = {}
        for name, runs in rows.items():
            per_seed = [metrics(runs[s]["success_turn"], runs[s]["ranks"]) for s in seeds]
            summary[name] = {
                k: (
                    float(np.mean([m[k] for m in per_seed])),
                    float(np.std([m[k] for m in per_seed], ddof=1)) if len(seeds) > 1 else 0.0,
                )
                for k in per_seed[0]
            }
        ceiling = ceiling_row(summary)
        top = summary[ceiling]["success@5"][0]
        low = summary[GREEDY]["success@5"][0] if greedy is not None else None
        order = sorted(summary, key=lambda n: (n not in ROWS, -summary[n]["success@5"][0]))
        for name in order:
            cells = [
                f"{summary[name][k][0]:.3f} ± {summary[name][k][1]:.3f}"
                for k in ("success@3", "success@5", "success 1-5", "R@10@5")
            ]
            closed = "-"
            if low is not None and name not in ROWS and top > low:
                closed = f"{(summary[name]['success@5'][0] - low) / (top - low):+.2f}"
            label = f"**{name}** (ceiling)" if name == ceiling else name
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {closed} |")
        lines += ["", "Where the room is (paired intervals):", ""]
        learned = [n for n in summary if n not in ROWS and n != GREEDY]
        if learned:
            best = max(learned, key=lambda n: summary[n]["success@5"][0])
            lines.append(
                f"- reading the captions, `posterior-map` - the best published agent (`{best}`): "
                f"success@5 **{paired(rows, 'posterior-map', best, seeds, 5)}**, "
                f"mean over turns 1-5 {paired(rows, 'posterior-map', best, seeds, None)};"
            )
        lines += [
            "- planning what to show, `posterior-lookahead` - `posterior-map`: success@3 "
            f"{paired(rows, 'posterior-lookahead', 'posterior-map', seeds, 3)}, success@5 "
            f"**{paired(rows, 'posterior-lookahead', 'posterior-map', seeds, 5)}**, mean over turns 1-5 "
            f"{paired(rows, 'posterior-lookahead', 'posterior-map', seeds, None)};",
            "- predicting the attributes, `posterior-map (labels)` - `posterior-map`: success@5 "
            f"{paired(rows, 'posterior-map (labels)', 'posterior-map', seeds, 5)}.",
            "",
            "The agents' own time per dialog and turn "
            f"({data['num_items']:,} items, 64 dialogs a batch): map "
            f"{data['ms_per_dialog_turn']['map']:.2f} ms, lookahead {data['ms_per_dialog_turn']['lookahead']:.1f} ms.",
        ]
    lines += provenance_lines(meta["command"], load=meta["load"])
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fiq_gym.benchmarks.ceiling", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATION_RUNS), choices=list(CONFIGURATION_RUNS)
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument(
        "--results", type=Path, default=default_results_dir(), help="where the published leaderboard runs are"
    )
    parser.add_argument(
        "--out", type=Path, default=default_results_dir(), help="directory of ceiling.md / ceiling.json"
    )
    args = parser.parse_args(argv)
    refuse_unclean_publication(parser, args.out)
    meta = {
        "command": command_line("fiq_gym.benchmarks.ceiling", argv),
        "revision": git_revision(),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    measured = {c: run(c, args.seeds, args.episodes, args.results) for c in args.configurations}
    text = to_markdown(measured, args.seeds, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ceiling.md", text)
    record = {
        c: {
            "env_id": d["env_id"],
            "ms_per_dialog_turn": d["ms_per_dialog_turn"],
            "runs": {
                name: {
                    str(s): {
                        "success_turn": runs[s]["success_turn"].tolist(),
                        "ranks": runs[s]["ranks"].tolist(),
                    }
                    for s in args.seeds
                }
                for name, runs in d["rows"].items()
                if name in ROWS
            },
        }
        for c, d in measured.items()
    }
    atomic_write_text(args.out / "ceiling.json", json.dumps({**meta, "configurations": record}) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
