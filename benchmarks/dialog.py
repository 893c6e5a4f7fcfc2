"""The dialog retrieval benchmark: supervised vs RL-trained retrievers on one evaluation set.

    fiq-gym bench --quick                       # the README's main job (< 10 min on 2 cores)
    fiq-gym bench --full --publish              # more seeds, longer training, both users
    python -m fiq_gym.benchmarks.dialog --preset tiny --catalog DIR --out /tmp/bench

Every agent is trained (or loaded from the run directory's cache when its arguments are
unchanged), then evaluated on the same fixed evaluation set with every evaluation user;
agents trained with one user and evaluated with the other show how much a retriever
overfits its simulator. Outputs: ``dialog.md``, ``dialog.csv``, ``dialog.json``,
``recall_at_10_by_turn.png`` and each training run's TensorBoard events.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from fiq_gym.benchmarks.publishing import git_revision, library_versions, published_results_dir
from fiq_gym.comparison import paired_difference
from fiq_gym.envs.evaluation import evaluate
from fiq_gym.evaluation import RECALL_KS, EvaluationResult, EvaluationSet

__all__ = ["AGENTS", "PRESETS", "Preset", "main", "run_benchmark"]

AGENTS = ("random", "supervised", "control-pg", "policy-gradient", "control-pi", "policy-improvement", "ppo")
#: Equal-budget controls: the supervised retriever continued from the same checkpoint, with
#: the same rounds, dialogs per round and seeds as the fine-tuning agent it controls, so a
#: difference between the two is the method's, not the extra training's.
CONTROLS = {"policy-gradient": "control-pg", "policy-improvement": "control-pi"}
#: The comparisons every report makes, (agent, against), at the last turn, with paired intervals.
COMPARISONS = (
    ("policy-gradient", "control-pg"),
    ("policy-improvement", "control-pi"),
    ("policy-gradient", "supervised"),
    ("policy-improvement", "supervised"),
    ("control-pg", "supervised"),
    ("control-pi", "supervised"),
    ("ppo", "random"),
)
METRICS = (*(f"R@{k}" for k in RECALL_KS), "mean_percentile", "success_rate")


@dataclass(frozen=True)
class Preset:
    name: str
    seeds: tuple[int, ...]
    episodes: int
    supervised_rounds: int
    pg_rounds: int
    mbpi_rounds: int
    ppo_timesteps: int
    num_envs: int = 32
    train_users: tuple[str, ...] = ("template",)
    eval_users: tuple[str, ...] = ("template",)


PRESETS = {
    # Seconds: for tests and smoke runs on a small catalog.
    "tiny": Preset(
        "tiny",
        seeds=(0,),
        episodes=16,
        supervised_rounds=2,
        pg_rounds=2,
        mbpi_rounds=3,
        ppo_timesteps=256,
        num_envs=8,
    ),
    # The README's main job: under 10 minutes on a 2-core machine.
    "quick": Preset(
        "quick",
        seeds=(0,),
        episodes=500,
        supervised_rounds=250,
        pg_rounds=80,
        mbpi_rounds=40,
        ppo_timesteps=48_000,
        # Training with the template shopper, evaluating with both: the cross-user check is
        # nearly free because only evaluation runs with the learned shopper.
        eval_users=("template", "transformer"),
    ),
    # 3 seeds x 2,000 paired dialogs: a 0.02 difference in success at turn 5 is detectable when
    # the agents disagree on up to ~15% of dialogs (benchmarks/README.md, "Power").
    "full": Preset(
        "full",
        seeds=(0, 1, 2),
        episodes=2000,
        supervised_rounds=600,
        pg_rounds=200,
        mbpi_rounds=100,
        ppo_timesteps=100_000,
        train_users=("template", "transformer"),
        eval_users=("template", "transformer"),
    ),
}


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

    budgets: dict[tuple[str, str, int], Budget] = field(default_factory=dict)

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
        seeds, with 95% bootstrap intervals (:func:`fiq_gym.comparison.paired_difference`)."""
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


# --- training, with a cache in the run directory ------------------------------------------------


def _cached(out: Path, args: Any) -> bool:
    """True if ``out/checkpoint`` was trained with exactly these arguments (``overwrite``,
    which only says how the run directory was claimed, aside)."""
    config = out / "checkpoint" / "config.json"
    if not config.exists():
        return False
    stored = dict(json.loads(config.read_text()).get("args", {}))
    wanted = json.loads(json.dumps(dataclasses.asdict(args), default=str))
    stored.pop("overwrite", None)
    wanted.pop("overwrite", None)
    return stored == wanted


def _train_retriever(module: Any, args: Any, progress: bool) -> tuple[Path, float | None]:
    """The checkpoint and the training wall time (None when the cache had it)."""
    out = Path(args.out)
    if _cached(out, args):
        return out / "checkpoint", None
    # The benchmark owns its run directories: a stale run (other arguments) is replaced.
    started = time.perf_counter()
    module.train(dataclasses.replace(args, overwrite=True), progress=progress)
    return out / "checkpoint", time.perf_counter() - started


def train_agents(
    preset: Preset,
    agents: Sequence[str],
    user: str,
    seed: int,
    catalog: str | None,
    run: Path,
    progress: bool,
    max_turns: int,
) -> tuple[dict[str, Any], dict[str, Budget]]:
    """Train (or load) every requested agent for one (user, seed); return what evaluates them
    and what each one's training cost."""
    from fiq_gym.agents import policy_gradient, policy_improvement, ppo, supervised

    base = run / user / f"seed{seed}"
    # One torch thread: the networks are small, and a second thread would fight the env's
    # numpy work (and anything else on a 2-core machine) for the cores.
    common = {"catalog": catalog, "user": user, "seed": seed, "max_turns": max_turns, "threads": 1}
    trained: dict[str, Any] = {}
    budgets: dict[str, Budget] = {}

    def retriever(name: str, module: Any, args: Any, starts_from: str) -> None:
        trained[name], seconds = _train_retriever(module, args, progress)
        budgets[name] = Budget(args.rounds, args.rounds * args.num_envs, 0, seconds, starts_from)

    fine_tuned = [
        a for a in agents if a in ("policy-gradient", "policy-improvement", "control-pg", "control-pi")
    ]
    if "supervised" in agents or fine_tuned:
        sup_args = supervised.Args(
            **common,
            num_envs=preset.num_envs,
            rounds=preset.supervised_rounds,
            eval_every=preset.supervised_rounds,
            eval_episodes=min(64, preset.episodes),
            out=str(base / "supervised"),
        )
        retriever("supervised", supervised, sup_args, "scratch")
    init = str(trained.get("supervised"))
    sup_budget = budgets.get("supervised", Budget())
    continued = f"supervised ({sup_budget.rounds} rounds)"
    if "policy-gradient" in agents:
        args = policy_gradient.Args(
            **common,
            init=init,
            num_envs=preset.num_envs,
            rounds=preset.pg_rounds,
            eval_every=preset.pg_rounds,
            eval_episodes=min(64, preset.episodes),
            learning_rate=3e-5,
            out=str(base / "policy_gradient"),
        )
        retriever("policy-gradient", policy_gradient, args, continued)
    if "policy-improvement" in agents:
        args = policy_improvement.Args(
            **common,
            init=init,
            num_envs=preset.num_envs,
            rounds=preset.mbpi_rounds,
            eval_every=preset.mbpi_rounds,
            eval_episodes=min(64, preset.episodes),
            out=str(base / "policy_improvement"),
        )
        retriever("policy-improvement", policy_improvement, args, continued)
    for control, rounds in (("control-pg", preset.pg_rounds), ("control-pi", preset.mbpi_rounds)):
        if (
            control in agents
            and control == "control-pi"
            and "control-pg" in trained
            and rounds == preset.pg_rounds
        ):
            # the same training as control-pg (equal rounds): reuse it rather than run it twice
            trained[control], budgets[control] = trained["control-pg"], budgets["control-pg"]
            continue
        if control in agents:
            # The same rounds, dialogs per round and round seeds as the agent it controls
            # (every trainer seeds round r's dialogs with seed * 1_000_003 + r * num_envs).
            args = supervised.Args(
                **common,
                init=init,
                init_optimizer=True,  # continue the supervised training, do not restart Adam
                num_envs=preset.num_envs,
                rounds=rounds,
                eval_every=rounds,
                eval_episodes=min(64, preset.episodes),
                out=str(base / control.replace("-", "_")),
            )
            retriever(control, supervised, args, continued)
    if "ppo" in agents:
        args = ppo.Args(
            **common,
            timesteps=preset.ppo_timesteps,
            eval_episodes=min(64, preset.episodes),
            n_steps=max(8, min(64, preset.ppo_timesteps // 16)),
            out=str(base / "ppo"),
        )
        seconds = None
        if not _cached(Path(args.out), args):
            started = time.perf_counter()
            ppo.train(dataclasses.replace(args, overwrite=True), progress=progress)
            seconds = time.perf_counter() - started
        trained["ppo"] = Path(args.out) / "checkpoint"
        budgets["ppo"] = Budget(0, 0, args.timesteps, seconds, "scratch")  # dialogs vary in length
    if "random" in agents:
        trained["random"] = None
        budgets["random"] = Budget()
    if "supervised" not in agents:
        trained.pop("supervised", None)
        budgets.pop("supervised", None)
    return trained, budgets


def _agent_and_env(
    name: str,
    checkpoint: Path | None,
    user: str,
    catalog: str | None,
    num_envs: int,
    max_turns: int,
    seed: int,
):
    """The agent and the env it is evaluated in with shopper ``user`` (a trained agent keeps
    the tokenizer of the shopper it was trained with; see :meth:`LoadedAgent.make_envs`)."""
    from fiq_gym.agents import RandomAgent
    from fiq_gym.agents.checkpoint import ACTION_MODES, load_agent

    if checkpoint is None:
        envs = gym.make_vec(
            "fiq_gym/FashionIQ-v1",
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            catalog=catalog,
            user=user,
            action_mode=ACTION_MODES[name],
            max_turns=max_turns,
        )
        return RandomAgent.for_env(envs, seed=seed), envs
    loaded = load_agent(checkpoint)
    envs = loaded.make_envs(num_envs, catalog=catalog, user=user, max_turns=max_turns)
    return loaded.make_agent(envs), envs


def run_benchmark(
    preset: Preset,
    out: Path,
    *,
    catalog: str | None = None,
    agents: Sequence[str] = AGENTS,
    seeds: Sequence[int] | None = None,
    train_users: Sequence[str] | None = None,
    eval_users: Sequence[str] | None = None,
    max_turns: int = 5,
    progress: bool = True,
    command: str = "",
    sealed: bool = True,
) -> BenchmarkResult:
    start = time.perf_counter()
    seeds = tuple(seeds if seeds is not None else preset.seeds)
    train_users = tuple(train_users or preset.train_users)
    eval_users = tuple(eval_users or preset.eval_users)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(AGENTS)}")
    out.mkdir(parents=True, exist_ok=True)
    result = BenchmarkResult(preset, command=command, sealed=sealed)
    stages = [(u, s) for u in train_users for s in seeds]
    for k, (user, seed) in enumerate(stages, 1):
        if progress:
            print(
                f"[{k}/{len(stages)}] training {', '.join(agents)} with the {user} shopper, seed {seed}",
                flush=True,
            )
        trained, budgets = train_agents(
            preset, agents, user, seed, catalog, out / "runs", progress, max_turns
        )
        result.budgets.update({(name, user, seed): b for name, b in budgets.items()})
        for eval_user in eval_users:
            for name in agents:
                agent, envs = _agent_and_env(
                    name,
                    trained.get(name),
                    eval_user,
                    catalog,
                    min(64, preset.episodes),
                    max_turns,
                    seed,
                )
                try:
                    eval_set = _evaluation_set(out, envs.unwrapped.num_items, preset.episodes)
                    evaluation = evaluate(agent, envs, eval_set, seed=seed, name=name, sealed=sealed)
                finally:
                    envs.close()
                result.records.append(Record(name, user, eval_user, seed, evaluation))
                if progress:
                    final = evaluation.per_turn()[-1]
                    print(
                        f"    {name:<20} trained {user:<11} evaluated {eval_user:<11} "
                        f"R@10 {final['R@10']:.3f}  success {final['success_rate']:.3f}",
                        flush=True,
                    )
    result.seconds = time.perf_counter() - start
    return result


def _evaluation_set(out: Path, num_items: int, episodes: int) -> EvaluationSet:
    """One fixed set per run directory, saved beside the results (like the papers' files)."""
    path = out / f"evaluation_set_{num_items}items_{episodes}episodes.json"
    if path.exists():
        return EvaluationSet.load(path)
    eval_set = EvaluationSet.generate(num_items, episodes, seed=2021)
    eval_set.save(path)
    return eval_set


# --- reports ---------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], metric: str) -> str:
    if row["seeds"] > 1:
        return f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}"
    return f"{row[metric]:.3f}"


def to_markdown(result: BenchmarkResult) -> str:
    from fiq_gym.benchmarks.throughput import machine_line

    rows = result.aggregate()
    p = result.preset
    lines = [
        f"# Dialog retrieval benchmark (`{p.name}` preset)",
        "",
        f"Command: `{result.command}`  ",
        f"Git revision: {git_revision()}  ",
        f"Versions: {library_versions()}  ",
        f"Machine: {machine_line()}  ",
        f"Wall time: {result.seconds / 60:.1f} min; seeds {list(p.seeds)}; {p.episodes} evaluation episodes; "
        f"training: supervised {p.supervised_rounds} rounds x {p.num_envs} dialogs, policy gradient "
        f"{p.pg_rounds} rounds, policy improvement {p.mbpi_rounds} rounds, PPO {p.ppo_timesteps:,} steps.",
        "",
        "Evaluation: "
        + (
            "sealed harness (the environment runs in a separate process; agents see observations, caption, "
            "shown item, turn and success only)."
            if result.sealed
            else "UNSEALED harness (debugging run: not for publication)."
        ),
        "",
        "Ranks are 0-based among all catalog items; turn 0 is the first (random) item shown before the agent",
        "acts. Values are means over seeds (± std when there are several). `control-pg` / `control-pi`: the",
        "supervised retriever continued from the same checkpoint with the same rounds, dialogs and seeds as",
        "policy gradient / policy improvement (equal-budget controls).",
        "",
    ]
    if len(p.seeds) == 1:
        lines += [
            "**A smoke test, not a comparison**: one training seed. The intervals below cover the evaluation",
            "dialogs only; another seed or another CPU can move a cell by more than they say (see",
            "benchmarks/README.md). Only the full preset's tables support claims.",
            "",
        ]
    lines += _budget_table(result)
    pairs = sorted({(r["train_user"], r["eval_user"]) for r in rows}, key=lambda x: (x[0] != x[1], x))
    for train_user, eval_user in pairs:
        part = [r for r in rows if r["train_user"] == train_user and r["eval_user"] == eval_user]
        lines += [f"## Trained with the {train_user} shopper, evaluated with the {eval_user} shopper", ""]
        lines += ["| agent | turn | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
        for row in sorted(part, key=lambda r: (AGENTS.index(r["agent"]), r["turn"])):
            if row["turn"] == 0:
                continue
            lines.append(
                f"| {row['agent']} | {row['turn']} | " + " | ".join(_cell(row, m) for m in METRICS) + " |"
            )
        lines.append("")
        lines += _comparison_table(result, train_user, eval_user)
    if len(pairs) > 1:
        last = max(r["turn"] for r in rows)
        lines += [
            "## Cross-user evaluation: R@10 at the last turn",
            "",
            "| agent | " + " | ".join(f"{a} -> {b}" for a, b in pairs) + " |",
            "|---|" + "---:|" * len(pairs),
        ]
        for agent in [a for a in AGENTS if any(r["agent"] == a for r in rows)]:
            cells = []
            for a, b in pairs:
                match = [
                    r
                    for r in rows
                    if (r["agent"], r["train_user"], r["eval_user"], r["turn"]) == (agent, a, b, last)
                ]
                cells.append(_cell(match[0], "R@10") if match else "-")
            lines.append(f"| {agent} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _budget_table(result: BenchmarkResult) -> list[str]:
    """What each agent's training cost (the first train user's runs; all seeds alike)."""
    if not result.budgets:
        return []
    user = result.records[0].train_user if result.records else ""
    lines = [
        "## Training budgets",
        "",
        "| agent | starts from | rounds | dialogs | env steps | training time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for agent in AGENTS:
        found = [b for (a, u, _), b in sorted(result.budgets.items()) if a == agent and u == user]
        if not found:
            continue
        b = found[0]
        times = [x.seconds for x in found if x.seconds is not None]
        took = f"{np.mean(times):.0f} s" if times else ("-" if agent == "random" else "cached")
        lines.append(
            f"| {agent} | {b.starts_from} | {b.rounds or '-'} | {b.dialogs or '-'} | {b.env_steps or '-'} | {took} |"
        )
    return [*lines, ""]


def _comparison_table(result: BenchmarkResult, train_user: str, eval_user: str) -> list[str]:
    rows = result.comparisons(train_user, eval_user)
    if not rows:
        return []
    first = rows[0]["success"]
    over = (
        f"{first.seeds} seeds x {first.dialogs} dialogs, resampling seeds and dialogs"
        if first.seeds > 1
        else f"{first.dialogs} dialogs of one seed, resampling dialogs only"
    )
    lines = [
        f"Paired differences at turn {rows[0]['turn']} (same dialogs; 95% bootstrap interval over {over}):",
        "",
        "| comparison | Δ success [95% CI] | Δ R@10 [95% CI] | reading |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        success, recall = row["success"], row["R@10"]
        if success.excludes_zero:
            reading = f"{row['agent'] if success.mean > 0 else row['against']} succeeds more often"
        elif recall.excludes_zero:
            reading = f"no detectable success difference; R@10 favours {row['agent'] if recall.mean > 0 else row['against']}"
        else:
            reading = "no detectable difference"
        lines.append(f"| {row['agent']} - {row['against']} | {success} | {recall} | {reading} |")
    return [*lines, ""]


_SECTION = re.compile(r"## Trained with the (\S+) shopper, evaluated with the (\S+) shopper")


def parse_markdown_tables(text: str) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """Read the per-turn tables of ``dialog.md`` back (means only), keyed by
    (agent, train user, eval user, turn)."""
    out: dict[tuple[str, str, str, int], dict[str, float]] = {}
    users: tuple[str, str] | None = None
    header: list[str] = []
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            users = (match.group(1), match.group(2))
        elif line.startswith("## "):
            users = None
        elif users and line.startswith("| agent | turn |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif not line.strip():
            header = []  # a table ends at a blank line (comparison tables follow)
        elif users and header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            values = {h: float(c.split(" ± ")[0]) for h, c in zip(header[2:], cells[2:], strict=True)}
            out[(cells[0], users[0], users[1], int(cells[1]))] = values
    return out


def plot_recall(result: BenchmarkResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.aggregate() if r["train_user"] == r["eval_user"]]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for agent, user in sorted(
        {(r["agent"], r["train_user"]) for r in rows}, key=lambda x: (x[1], AGENTS.index(x[0]))
    ):
        part = sorted(
            (r for r in rows if r["agent"] == agent and r["train_user"] == user), key=lambda r: r["turn"]
        )
        turns = [r["turn"] for r in part]
        mean = np.array([r["R@10"] for r in part])
        std = np.array([r["R@10_std"] for r in part])
        label = agent if len({r["train_user"] for r in rows}) == 1 else f"{agent} ({user})"
        ax.plot(turns, mean, marker="o", label=label)
        ax.fill_between(turns, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("turn")
    ax.set_ylabel("R@10")
    ax.set_title(f"Recall@10 by dialog turn ({result.preset.name} preset)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_outputs(result: BenchmarkResult, out: Path) -> list[Path]:
    rows = result.aggregate()
    markdown = to_markdown(result)
    atomic_write_text(out / "dialog.md", markdown)
    atomic_write_json(
        out / "dialog.json",
        {
            "preset": dataclasses.asdict(result.preset),
            "command": result.command,
            "sealed": result.sealed,
            "seconds": result.seconds,
            "git_revision": git_revision(),
            "versions": library_versions(),
            "aggregate": rows,
            "budgets": [
                {"agent": a, "train_user": u, "seed": seed, **dataclasses.asdict(b)}
                for (a, u, seed), b in sorted(result.budgets.items())
            ],
            "comparisons": [
                {
                    "train_user": tu,
                    "eval_user": eu,
                    **{k: (dataclasses.asdict(v) if k in ("success", "R@10") else v) for k, v in c.items()},
                }
                for tu, eu in sorted({(r.train_user, r.eval_user) for r in result.records})
                for c in result.comparisons(tu, eu)
            ],
            "runs": [
                {
                    "agent": r.agent,
                    "train_user": r.train_user,
                    "eval_user": r.eval_user,
                    "seed": r.seed,
                    "per_turn": r.result.per_turn(),
                    "mean_turns_to_success": r.result.mean_turns_to_success,
                    # per-dialog outcomes, so any comparison can be recomputed from the file
                    "ranks": np.asarray(r.result.ranks).tolist(),
                    "success_turn": np.asarray(r.result.success_turn).tolist(),
                }
                for r in result.records
            ],
        },
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "dialog.csv", buffer.getvalue())
    atomic_write_bytes(out / "recall_at_10_by_turn.png", plot_recall(result))
    return [out / n for n in ("dialog.md", "dialog.json", "dialog.csv", "recall_at_10_by_turn.png")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fiq-gym bench", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_const", const="quick", dest="preset", help="the README's main job"
    )
    group.add_argument(
        "--full", action="store_const", const="full", dest="preset", help="more seeds, both users"
    )
    group.add_argument("--preset", choices=sorted(PRESETS), dest="preset")
    parser.add_argument("--catalog", help="catalog directory (default: the built-in synthetic catalog)")
    parser.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS))
    parser.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    parser.add_argument("--train-users", nargs="+", choices=("template", "transformer"))
    parser.add_argument("--eval-users", nargs="+", choices=("template", "transformer"))
    parser.add_argument("--turns", type=int, default=5, help="dialog turns (max_turns)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="run directory (also the cache)")
    parser.add_argument(
        "--publish", action="store_true", help="also write the reports to benchmarks/results/PRESET/"
    )
    sealing = parser.add_mutually_exclusive_group()
    sealing.add_argument(
        "--sealed",
        dest="sealed",
        action="store_true",
        default=True,
        help="evaluate with the environment in a separate process (the default)",
    )
    sealing.add_argument(
        "--unsealed",
        dest="sealed",
        action="store_false",
        help="evaluate in this process, for debugging; --publish refuses it",
    )
    args = parser.parse_args(argv)
    if args.publish and not args.sealed:
        parser.error("--publish needs the sealed harness: published tables never come from --unsealed runs")
    preset = PRESETS[args.preset or "quick"]
    command = "fiq-gym bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = run_benchmark(
        preset,
        args.out / preset.name,
        catalog=args.catalog,
        agents=args.agents,
        seeds=args.seeds,
        train_users=args.train_users,
        eval_users=args.eval_users,
        max_turns=args.turns,
        command=command.strip(),
        sealed=args.sealed,
    )
    written = write_outputs(result, args.out / preset.name)
    if args.publish:
        written += write_outputs(result, published_results_dir() / preset.name)
    print()
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
