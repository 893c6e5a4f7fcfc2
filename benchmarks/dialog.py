"""The dialog retrieval benchmark: supervised vs RL-trained retrievers on one evaluation set.

    fiq-gym bench --quick                       # the README's main job (~11 min on 2 cores)
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
import hashlib
import io
import json
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.atomic import atomic_write_bytes, atomic_write_text
from fiq_gym.benchmarks.publishing import (
    add_publish_argument,
    git_revision,
    library_versions,
    prepare_publish_dir,
)
from fiq_gym.cli_args import absolute_path_object, catalog_arg
from fiq_gym.comparison import paired_difference
from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.envs.evaluation import evaluate
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.isolation import AgentSpec
from fiq_gym.envs.registration import env_id_for
from fiq_gym.evaluation import RECALL_KS, EvaluationResult, EvaluationSet, RetrievalAgent
from fiq_gym.links import doc_url
from fiq_gym.shortlist import FIRST_STAGE_VERSION
from fiq_gym.starts import START_MODES, start_kwargs
from fiq_gym.users.registry import SHOPPERS

__all__ = ["AGENTS", "PRESETS", "Preset", "main", "run_benchmark"]

AGENTS = (
    "random",
    "supervised",
    "control-pg",
    "policy-gradient",
    "control-pi",
    "policy-improvement",
    "ppo",
    "shortlist-random",
    "shortlist-greedy",
    "ppo-shortlist",
    "dqn-shortlist",
    "posterior-map",
    "posterior-lookahead",
)
#: The reference agents: the Bayesian reader of the shopper's captions (fiq_gym.agents.posterior),
#: showing the most probable item or planning one step; the better is each table's ceiling.
#: They need the shipped features (their readout's inputs); on other catalogs they are skipped.
REFERENCES = ("posterior-map", "posterior-lookahead")
#: Agents that need no training: they play the env's shortlist (or its index space) as is.
UNTRAINED = ("random", "shortlist-random", "shortlist-greedy", *REFERENCES)
#: Agents that play the env's ``shortlist`` action mode. Their first stage is the env's default
#: (the retriever shipped with the package) on the built-in catalog; on another catalog, which
#: the shipped one does not fit, it is the stage's own supervised retriever.
SHORTLIST_AGENTS = ("shortlist-random", "shortlist-greedy", "ppo-shortlist", "dqn-shortlist")
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
    # does a policy trained with rewards beat showing the first stage's best candidate?
    ("ppo-shortlist", "shortlist-greedy"),
    ("dqn-shortlist", "shortlist-greedy"),
    ("shortlist-greedy", "shortlist-random"),
    # the value of planning what to show, for the Bayesian reader
    ("posterior-lookahead", "posterior-map"),
)
#: The per-turn columns of the report, CSV and JSON (keys of ``EvaluationResult.per_turn``):
#: the older ones first, so existing columns keep their positions. ``Hits@10`` is cumulative
#: (ChatIR); ``BRI`` at turn t is the best log-rank integral over turns 0..t (PlugIR), so the
#: last turn's is the dialog's BRI (docs/benchmarks.md, "Metrics").
METRICS = (*(f"R@{k}" for k in RECALL_KS), "mean_percentile", "success_rate", "Hits@10", "BRI")


@dataclass(frozen=True)
class Preset:
    name: str
    seeds: tuple[int, ...]
    episodes: int
    supervised_rounds: int
    pg_rounds: int
    mbpi_rounds: int
    ppo_timesteps: int
    #: env steps for each off-the-shelf shortlist agent (PPO and DQN get the same budget)
    shortlist_timesteps: int
    num_envs: int = 32
    train_users: tuple[str, ...] = ("template",)
    eval_users: tuple[str, ...] = ("template",)
    #: run the slate section after the dialog tables (:mod:`fiq_gym.benchmarks.slates`, with
    #: this preset's seeds; on the ``default`` configuration only)
    slate_section: bool = False


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
        shortlist_timesteps=256,
        num_envs=8,
    ),
    # The README's main job: about 11 minutes on an idle 2-core machine.
    "quick": Preset(
        "quick",
        seeds=(0,),
        episodes=500,
        supervised_rounds=250,
        pg_rounds=80,
        mbpi_rounds=40,
        ppo_timesteps=48_000,
        shortlist_timesteps=10_000,
        # Training with the template shopper, evaluating with both: the cross-user check is
        # nearly free because only evaluation runs with the learned shopper.
        eval_users=("template", "transformer"),
    ),
    # The leaderboard's budget (benchmarks/results/leaderboard.md): the quick preset's training
    # with 3 seeds and 1,000 dialogs, template shopper only, so a configuration costs ~30 min.
    "leaderboard": Preset(
        "leaderboard",
        seeds=(0, 1, 2),
        episodes=1000,
        supervised_rounds=250,
        pg_rounds=80,
        mbpi_rounds=40,
        ppo_timesteps=48_000,
        shortlist_timesteps=10_000,
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
        # 2.5x the quick preset's; ~150 env steps/s each on one free core.
        shortlist_timesteps=25_000,
        # Trained with the template shopper, evaluated with both (the cross-simulator check).
        # Training with the learned shopper as well doubles the cost (~5 h on 2 cores with
        # eleven agents); ask for it with --train-users template transformer.
        train_users=("template",),
        eval_users=("template", "transformer"),
        # PPO (SB3 and RLlib) on the shortlist slate beside its control and the reader's slates:
        # about 40 min more (results/full/slates.md; --no-slates skips it).
        slate_section=True,
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
    env_id: str = "fiq_gym/FashionIQ-v3",
    start: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Budget], str]:
    """Train (or load) every requested agent for one (user, seed); return what evaluates them,
    what each one's training cost and the shortlist agents' first stage. ``start``: the
    trainers' ``start`` and ``start_split`` (none: uniform starts)."""
    from fiq_gym.agents import dqn, policy_gradient, policy_improvement, ppo, supervised

    base = run / user_directory(user) / f"seed{seed}"
    # One torch thread: the networks are small, and a second thread would fight the env's
    # numpy work (and anything else on a 2-core machine) for the cores.
    common: dict[str, Any] = {
        "env_id": env_id,
        "catalog": catalog,
        "user": user,
        "seed": seed,
        "max_turns": max_turns,
        "threads": 1,
        **(start or {}),
    }
    trained: dict[str, Any] = {}
    budgets: dict[str, Budget] = {}

    def retriever(name: str, module: Any, args: Any, starts_from: str) -> None:
        trained[name], seconds = _train_retriever(module, args, progress)
        budgets[name] = Budget(args.rounds, args.rounds * args.num_envs, 0, seconds, starts_from)

    fine_tuned = [
        a for a in agents if a in ("policy-gradient", "policy-improvement", "control-pg", "control-pi")
    ]
    own_first_stage = catalog is not None and any(a in agents for a in SHORTLIST_AGENTS)
    if "supervised" in agents or fine_tuned or own_first_stage:
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
    first_stage = f"retriever:{init}" if own_first_stage else "retriever"
    sup_budget = budgets.get("supervised", Budget())
    continued = f"supervised ({sup_budget.rounds} rounds)"
    if "policy-gradient" in agents:
        pg_args = policy_gradient.Args(
            **common,
            init=init,
            num_envs=preset.num_envs,
            rounds=preset.pg_rounds,
            eval_every=preset.pg_rounds,
            eval_episodes=min(64, preset.episodes),
            learning_rate=3e-5,
            out=str(base / "policy_gradient"),
        )
        retriever("policy-gradient", policy_gradient, pg_args, continued)
    if "policy-improvement" in agents:
        pi_args = policy_improvement.Args(
            **common,
            init=init,
            num_envs=preset.num_envs,
            rounds=preset.mbpi_rounds,
            eval_every=preset.mbpi_rounds,
            eval_episodes=min(64, preset.episodes),
            out=str(base / "policy_improvement"),
        )
        retriever("policy-improvement", policy_improvement, pi_args, continued)
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
            control_args = supervised.Args(
                **common,
                init=init,
                init_optimizer=True,  # continue the supervised training, do not restart Adam
                num_envs=preset.num_envs,
                rounds=rounds,
                eval_every=rounds,
                eval_episodes=min(64, preset.episodes),
                out=str(base / control.replace("-", "_")),
            )
            retriever(control, supervised, control_args, continued)

    def sb3(name: str, module: Any, args: Any) -> None:
        seconds = None
        if not _cached(Path(args.out), args):
            started = time.perf_counter()
            module.train(dataclasses.replace(args, overwrite=True), progress=progress)
            seconds = time.perf_counter() - started
        trained[name] = Path(args.out) / "checkpoint"
        budgets[name] = Budget(0, 0, args.timesteps, seconds, "scratch")  # dialogs vary in length

    if "ppo" in agents:
        ppo_args = ppo.Args(
            **common,
            timesteps=preset.ppo_timesteps,
            eval_episodes=min(64, preset.episodes),
            n_steps=max(8, min(64, preset.ppo_timesteps // 16)),
            out=str(base / "ppo"),
        )
        sb3("ppo", ppo, ppo_args)
    if "ppo-shortlist" in agents:
        # The trainer's defaults, which docs/agents.md recommends: no tuning on the benchmark.
        shortlist_args = ppo.Args(
            **common,
            action_mode="shortlist",
            shortlist=first_stage,
            timesteps=preset.shortlist_timesteps,
            eval_episodes=min(64, preset.episodes),
            n_steps=max(8, min(64, preset.shortlist_timesteps // 16)),
            out=str(base / "ppo_shortlist"),
        )
        sb3("ppo-shortlist", ppo, shortlist_args)
    if "dqn-shortlist" in agents:
        dqn_args = dqn.Args(
            **common,
            shortlist=first_stage,
            timesteps=preset.shortlist_timesteps,
            eval_episodes=min(64, preset.episodes),
            learning_starts=min(1_000, preset.shortlist_timesteps // 4),
            out=str(base / "dqn_shortlist"),
        )
        sb3("dqn-shortlist", dqn, dqn_args)
    for name in UNTRAINED:
        if name in agents:
            trained[name] = None
            budgets[name] = Budget()
    if "supervised" not in agents:
        trained.pop("supervised", None)
        budgets.pop("supervised", None)
    return trained, budgets, first_stage


def _bench_envs(
    name: str,
    checkpoint: Path | None,
    user: str,
    catalog: str | None,
    num_envs: int,
    max_turns: int,
    first_stage: str,
    env_id: str,
    start: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """The env agent ``name`` is evaluated in with shopper ``user`` (``start``: the env's
    ``start`` and ``start_split``; none: uniform starts)."""
    from fiq_gym.agents.checkpoint import ACTION_MODES, load_agent

    if checkpoint is None:
        shortlist: dict[str, Any] = {"shortlist": first_stage} if ACTION_MODES[name] == "shortlist" else {}
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            catalog=catalog,
            user=user,
            action_mode=ACTION_MODES[name],
            max_turns=max_turns,
            **shortlist,
            **(start or {}),
        )
    return load_agent(checkpoint, load_model=False).make_envs(
        num_envs, catalog=catalog, user=user, max_turns=max_turns, **(start or {})
    )


def bench_agent(envs: gym.vector.VectorEnv, name: str, checkpoint: str | None, seed: int) -> RetrievalAgent:
    """Benchmark agent ``name`` for ``envs``: loaded from ``checkpoint`` if it was trained, else
    built (the untrained agents and the references). Also the agent factory of an isolated
    evaluation (``AgentSpec("fiq_gym.benchmarks.dialog:bench_agent", ...)``)."""
    from fiq_gym.agents import RandomAgent
    from fiq_gym.agents.checkpoint import load_agent
    from fiq_gym.agents.shortlist import ShortlistGreedyAgent, ShortlistRandomAgent

    if checkpoint is not None:
        return load_agent(checkpoint).make_agent(envs)
    if name in REFERENCES:
        return _posterior(name, envs, seed)
    if name == "shortlist-greedy":
        return ShortlistGreedyAgent()
    if name == "shortlist-random":
        return ShortlistRandomAgent(seed=seed)
    return RandomAgent.for_env(envs, seed=seed)


def _posterior(name: str, envs: gym.vector.VectorEnv, seed: int) -> RetrievalAgent:
    """A reference agent; with a shopper that is not a template one (the learned shopper) it
    reads the captions by the noise-free template shopper's rules, which that one imitates."""
    from fiq_gym.agents.posterior import posterior_agent
    from fiq_gym.users.template import TemplateUser

    inner = inner_env(envs)
    rules = None if isinstance(inner.user, TemplateUser) else TemplateUser(inner.catalog)
    return posterior_agent(envs, name.removeprefix("posterior-"), seed=seed, rules=rules)


def references_unavailable(catalog: str | None, env_id: str) -> str | None:
    """Why the reference agents cannot play on ``catalog`` (None: they can)."""
    from fiq_gym.agents.posterior import Readout

    envs = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", catalog=catalog)
    try:
        inner = inner_env(envs)
        Readout.load().beliefs(inner.gallery, inner.catalog.vocabulary)
    except ValueError as e:
        return str(e)
    finally:
        envs.close()
    return None


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
    isolation: str | None = None,
    jobs: int = 1,
    configuration: str = "default",
    start: str = "uniform",
    start_split: str = "train",
    eval_start_split: str | None = None,
) -> BenchmarkResult:
    """Train and evaluate ``agents`` for every (train user, seed) stage of ``preset``.

    ``start="annotated"`` (an imported catalog): training dialogs start from the annotated
    pairs of ``start_split`` and evaluation dialogs from those of ``eval_start_split``
    (default: the same split), the evaluation set drawn from them (each pair once); each
    result's ``meta["human_captions"]`` then has the human share by turn for dataset shoppers.

    With ``jobs > 1`` the stages run in that many separate processes at once (each with one
    thread; ``python -m fiq_gym.benchmarks.dialog``, so nothing re-imports the caller's
    script) and this process gathers their records; the numbers are those of ``jobs=1``.

    Sealed, every evaluation of a process (the trainers' evaluations during training and the
    benchmark's own) runs on the warm child that :func:`fiq_gym.envs.evaluation.evaluate`
    keeps: one child process per run (per stage process with ``jobs > 1``), which keeps its
    imports, the shoppers it loaded and, while the env spec stays the same, its env. The
    numbers are those of a new child per evaluation (tested).
    """
    started_at = time.perf_counter()
    seeds = tuple(seeds if seeds is not None else preset.seeds)
    train_users = tuple(train_users or preset.train_users)
    eval_users = tuple(eval_users or preset.eval_users)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(AGENTS)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    env_id = env_id_for(configuration)
    train_start = start_kwargs(SimpleNamespace(start=start, start_split=start_split))
    eval_start = start_kwargs(SimpleNamespace(start=start, start_split=eval_start_split or start_split))
    if eval_start_split is not None and not eval_start:
        raise ValueError("--eval-start-split applies to annotated starts: add --start annotated")
    out.mkdir(parents=True, exist_ok=True)
    isolation = isolation or ("sealed" if sealed else "none")
    sealed = isolation != "none"
    result = BenchmarkResult(
        preset, command=command, sealed=sealed, isolation=isolation, configuration=configuration
    )
    reason = references_unavailable(catalog, env_id) if any(a in REFERENCES for a in agents) else None
    if reason is not None:
        result.skipped = {a: reason for a in agents if a in REFERENCES}
        agents = [a for a in agents if a not in REFERENCES]
        if progress:
            print(f"skipping {', '.join(result.skipped)}: {reason}", flush=True)
    stages = [(u, s) for u in train_users for s in seeds]
    if jobs > 1 and len(stages) > 1:
        worker_args = ["--agents", *agents, "--eval-users", *eval_users, "--turns", str(max_turns)]
        worker_args += ["--preset", preset.name, "--run-dir", str(out), "--config", configuration]
        worker_args += ([] if catalog is None else ["--catalog", str(catalog)]) + ["--isolation", isolation]
        if train_start:
            worker_args += ["--start", start, "--start-split", start_split]
            worker_args += ["--eval-start-split", eval_start["start_split"]]
        for stage_records, stage_budgets in _run_stages_in_processes(
            stages, worker_args, out, jobs, progress
        ):
            result.records += stage_records
            result.budgets.update(stage_budgets)
        # the serial order, whatever order the processes finished in
        order = {stage: i for i, stage in enumerate(stages)}
        result.records.sort(key=lambda r: order[(r.train_user, r.seed)])
        result.seconds = time.perf_counter() - started_at
        return result
    for k, (user, seed) in enumerate(stages, 1):
        if progress:
            print(
                f"[{k}/{len(stages)}] training {', '.join(agents)} with the {user} shopper, seed {seed}",
                flush=True,
            )
        trained, budgets, first_stage = train_agents(
            preset, agents, user, seed, catalog, out / "runs", progress, max_turns, env_id, train_start
        )
        result.budgets.update({(name, user, seed): b for name, b in budgets.items()})
        for eval_user in eval_users:
            for name in agents:
                checkpoint = trained.get(name)
                envs = _bench_envs(
                    name,
                    checkpoint,
                    eval_user,
                    catalog,
                    min(64, preset.episodes),
                    max_turns,
                    first_stage,
                    env_id,
                    eval_start,
                )
                try:
                    eval_set = _evaluation_set(out, envs, preset.episodes)
                    agent: Any
                    if isolation == "process":
                        # the agent built and run in a process of its own, from the checkpoint
                        where = None if checkpoint is None else str(Path(checkpoint).resolve())
                        agent = AgentSpec(
                            "fiq_gym.benchmarks.dialog:bench_agent",
                            {"name": name, "checkpoint": where, "seed": seed},
                        )
                    else:
                        agent = bench_agent(envs, name, None if checkpoint is None else str(checkpoint), seed)
                    # sealed: on the process-wide warm child, shared with the trainers' evaluations
                    evaluation = evaluate(agent, envs, eval_set, seed=seed, name=name, isolation=isolation)
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
    result.seconds = time.perf_counter() - started_at
    return result


def _run_stages_in_processes(
    stages: Sequence[tuple[str, int]], worker_args: list[str], out: Path, jobs: int, progress: bool
) -> list[tuple[list[Record], dict[tuple[str, str, int], Budget]]]:
    """Run each (user, seed) stage as ``python -m fiq_gym.benchmarks.dialog ... --stage-records
    FILE``, at most ``jobs`` at once; return what each wrote. A failed stage stops the run
    with the end of its log."""
    import os
    import pickle
    import subprocess

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Each process gets one core's worth of threads: jobs processes share the machine.
    env.update({v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    pending = list(stages)
    running: dict[tuple[str, int], tuple[subprocess.Popen, Path, Path, float]] = {}
    finished = []
    while pending or running:
        while pending and len(running) < jobs:
            user, seed = pending.pop(0)
            log = logs / f"{user_directory(user)}-seed{seed}.log"
            records = logs / f"{user_directory(user)}-seed{seed}.records.pkl"
            records.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "fiq_gym.benchmarks.dialog", *worker_args]
            cmd += ["--train-users", user, "--seeds", str(seed), "--stage-records", str(records)]
            with open(log, "w", encoding="utf-8") as handle:
                proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
            running[(user, seed)] = (proc, log, records, time.perf_counter())
            if progress:
                print(f"started {user} shopper, seed {seed} (log: {log})", flush=True)
        time.sleep(1.0)
        for stage, (proc, log, records, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[stage]
            if proc.returncode != 0 or not records.exists():
                for other, *_ in running.values():
                    other.kill()
                tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
                raise RuntimeError(
                    f"the benchmark stage {stage[0]} shopper, seed {stage[1]} failed (exit {proc.returncode}); "
                    f"its log {log} ends with:\n{tail}"
                )
            plain_records, plain_budgets = pickle.loads(records.read_bytes())
            finished.append(
                (
                    [Record(*fields) for fields in plain_records],
                    {key: Budget(**b) for key, b in plain_budgets.items()},
                )
            )
            if progress:
                minutes = (time.perf_counter() - started) / 60
                print(f"finished {stage[0]} shopper, seed {stage[1]} in {minutes:.1f} min", flush=True)
                for record in finished[-1][0]:
                    final = record.result.per_turn()[-1]
                    print(
                        f"    {record.agent:<20} trained {record.train_user:<11} evaluated {record.eval_user:<11} "
                        f"R@10 {final['R@10']:.3f}  success {final['success_rate']:.3f}",
                        flush=True,
                    )
    return finished


def _evaluation_set(out: Path, envs: gym.vector.VectorEnv, episodes: int) -> EvaluationSet:
    """One fixed set per run directory, saved beside the results (like the papers' files);
    from the env's annotated start pairs when it starts from them."""
    inner = inner_env(envs)
    num_items = inner.num_items
    starts = "" if inner.start_pairs is None else f"_annotated-{inner.config.start_split}"
    path = out / f"evaluation_set_{num_items}items_{episodes}episodes{starts}.json"
    if path.exists():
        return EvaluationSet.load(path)
    eval_set = EvaluationSet.for_env(envs, episodes, seed=2021)
    eval_set.save(path)
    return eval_set


# --- reports ---------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], metric: str) -> str:
    if row["seeds"] > 1:
        return f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}"
    return f"{row[metric]:.3f}"


def to_markdown(result: BenchmarkResult) -> str:
    from fiq_gym.benchmarks.publishing import machine_line

    rows = result.aggregate()
    p = result.preset
    seeds = sorted({r.seed for r in result.records})
    lines = [
        f"# Dialog retrieval benchmark (`{p.name}` preset)",
        "",
        f"Command: `{result.command}`  ",
        f"Git revision: {git_revision()}  ",
        f"Versions: {library_versions()}  ",
        f"Machine: {machine_line()}  ",
        f"Wall time: {result.seconds / 60:.1f} min; seeds {seeds}; {p.episodes} evaluation episodes; "
        f"training: supervised {p.supervised_rounds} rounds x {p.num_envs} dialogs, policy gradient "
        f"{p.pg_rounds} rounds, policy improvement {p.mbpi_rounds} rounds, PPO {p.ppo_timesteps:,} steps, "
        f"shortlist PPO and DQN {p.shortlist_timesteps:,} steps each.",
        *(
            [
                f"Configuration: `{result.configuration}` (`{env_id_for(result.configuration)}`): "
                f"{CONFIGURATIONS[result.configuration].summary}."
            ]
            if result.configuration != "default"
            else []
        ),
        "",
        "Evaluation: "
        + (
            "isolated harness (each agent runs in a process of its own, the environment and the evaluation set "
            "in the evaluator; agents see observations, caption, shown item, turn and success only)."
            if result.isolation == "process"
            else "sealed harness (the environment runs in a separate process; agents see observations, caption, "
            "shown item, turn and success only)."
            if result.sealed
            else "UNSEALED harness (debugging run: not for publication)."
        ),
        "",
        "Ranks are 0-based among all catalog items; turn 0 is the first (random) item shown before the agent",
        "acts. Hits@10 counts a dialog from the first turn its target entered the top 10 (cumulative, as in",
        "ChatIR); BRI at turn t is the best log-rank integral over turns 0..t (PlugIR; 0 = target first from",
        f"the start, lower is better; defined in {doc_url('docs/benchmarks.md', 'metrics')}).",
        "Values are means over seeds (± std when there are several). `control-pg` / `control-pi`: the",
        "supervised retriever continued from the same checkpoint with the same rounds, dialogs and seeds as",
        "policy gradient / policy improvement (equal-budget controls).",
        "",
    ]
    if any(r.agent in SHORTLIST_AGENTS for r in result.records):
        lines += [
            "Shortlist agents choose among K = 32 unseen candidates per turn proposed by the env's first",
            "stage (on the built-in catalog the retriever shipped with the package, first stage version "
            f"{FIRST_STAGE_VERSION};",
            "on another catalog the stage's own supervised retriever); `shortlist-greedy` shows the",
            "first stage's best candidate, `shortlist-random` a uniform one.",
            "",
        ]
    if len(seeds) == 1:
        lines += [
            "**A smoke test, not a comparison**: one training seed. The intervals below cover the evaluation",
            "dialogs only; another seed or another CPU can move a cell by more than they say (see",
            f"{doc_url('benchmarks/README.md', 'what-reproduces')}). Only the full preset's tables support claims.",
            "",
        ]
    if result.skipped:
        lines += [
            f"Not run: {', '.join(f'`{a}`' for a in result.skipped)}: {next(iter(result.skipped.values()))}.",
            "",
        ]
    pairs = sorted({(r["train_user"], r["eval_user"]) for r in rows}, key=lambda x: (x[0] != x[1], x))
    for train_user, eval_user in pairs:
        lines += _success_table(result, train_user, eval_user)
    lines += _budget_table(result)
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


def success_summary(
    result: BenchmarkResult, train_user: str, eval_user: str
) -> dict[str, dict[str, tuple[float, float]]]:
    """agent -> success@3, success@5, its mean over turns 1-5 and R@10 at the last turn, as
    (mean, std) over seeds, for one (train, eval) shopper pair."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for agent in AGENTS:
        records = [
            r
            for r in result.records
            if (r.agent, r.train_user, r.eval_user) == (agent, train_user, eval_user)
        ]
        if not records:
            continue
        per_seed: dict[str, list[float]] = {"success@3": [], "success@5": [], "success 1-5": [], "R@10": []}
        for r in records:
            found = np.asarray(r.result.success_turn)
            by = [float(np.mean((found >= 1) & (found <= t))) for t in range(1, 6)]
            per_seed["success@3"].append(by[2])
            per_seed["success@5"].append(by[4])
            per_seed["success 1-5"].append(float(np.mean(by)))
            per_seed["R@10"].append(float(np.mean(np.asarray(r.result.ranks)[:, -1] < 10)))
        out[agent] = {k: (float(np.mean(v)), float(np.std(v))) for k, v in per_seed.items()}
    return out


def _success_table(result: BenchmarkResult, train_user: str, eval_user: str) -> list[str]:
    """The headline table: success by turn first, the ceiling (the better reference agent) and
    each agent's share of the headroom over the greedy first stage closed."""
    summary = success_summary(result, train_user, eval_user)
    references = [a for a in REFERENCES if a in summary]
    ceiling = max(references, key=lambda a: summary[a]["success@5"][0]) if references else None
    low = summary["shortlist-greedy"]["success@5"][0] if "shortlist-greedy" in summary else None
    several = len({r.seed for r in result.records}) > 1
    lines = [
        f"## Success by turn: trained with the {train_user} shopper, evaluated with the {eval_user} shopper",
        "",
        "| agent | success@3 | success@5 | success, mean over turns 1-5 | R@10 at the last turn | headroom closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    order = sorted(summary, key=lambda a: (a not in REFERENCES, -summary[a]["success@5"][0]))
    for agent in order:
        cells = [
            f"{summary[agent][k][0]:.3f} ± {summary[agent][k][1]:.3f}"
            if several
            else f"{summary[agent][k][0]:.3f}"
            for k in ("success@3", "success@5", "success 1-5", "R@10")
        ]
        closed = "-"
        if ceiling is not None and low is not None and agent not in REFERENCES:
            top = summary[ceiling]["success@5"][0]
            closed = f"{(summary[agent]['success@5'][0] - low) / (top - low):+.2f}" if top > low else "-"
        name = f"**{agent}** (ceiling)" if agent == ceiling else agent
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {closed} |")
    lines.append("")
    if ceiling is not None:
        rules = "its own rules" if eval_user == "template" else "the noise-free template shopper's rules"
        lines += [
            f"The ceiling: `{ceiling}`, the Bayesian reader of the shopper's captions ({rules}; untrained, "
            "fiq_gym.agents.posterior). Headroom closed: (success@5 - `shortlist-greedy`'s) / (the "
            "ceiling's - `shortlist-greedy`'s)." + (" Cells: mean ± std over seeds." if several else ""),
            "",
        ]
    return lines


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
        took = f"{np.mean(times):.0f} s" if times else ("-" if agent in UNTRAINED else "cached")
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


def line_styles(count: int) -> list[tuple[str, str, str]]:
    """``(colour, line style, marker)`` for ``count`` lines, no two alike: matplotlib's ten
    default colours, then the same colours dashed with another marker, and so on (its default
    cycle would give lines 1 and 11 the same blue)."""
    colours = [f"C{i}" for i in range(10)]
    styles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D")
    if count > len(colours) * len(styles):
        raise ValueError(f"at most {len(colours) * len(styles)} distinguishable lines, got {count}")
    return [(colours[i % 10], styles[i // 10], markers[i // 10]) for i in range(count)]


def plot_recall(result: BenchmarkResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.aggregate() if r["train_user"] == r["eval_user"]]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    lines = sorted({(r["agent"], r["train_user"]) for r in rows}, key=lambda x: (x[1], AGENTS.index(x[0])))
    for (agent, user), (colour, style, marker) in zip(lines, line_styles(len(lines)), strict=True):
        part = sorted(
            (r for r in rows if r["agent"] == agent and r["train_user"] == user), key=lambda r: r["turn"]
        )
        turns = [r["turn"] for r in part]
        mean = np.array([r["R@10"] for r in part])
        std = np.array([r["R@10_std"] for r in part])
        label = agent if len({r["train_user"] for r in rows}) == 1 else f"{agent} ({user})"
        ax.plot(turns, mean, color=colour, linestyle=style, marker=marker, label=label)
        ax.fill_between(turns, mean - std, mean + std, color=colour, alpha=0.2)
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


def _json_with_one_line_per_run(data: dict[str, Any]) -> str:
    """``data`` as indented JSON, except that each entry of ``runs`` (thousands of per-dialog
    ranks) takes one compact line: a full run's file shrinks about fourfold and stays readable."""
    runs = data["runs"]
    head = json.dumps({k: v for k, v in data.items() if k != "runs"}, indent=2)
    lines = ",\n".join("    " + json.dumps(run, separators=(",", ":")) for run in runs)
    return head[: -len("\n}")] + ',\n  "runs": [\n' + lines + "\n  ]\n}\n"


def write_outputs(result: BenchmarkResult, out: Path) -> list[Path]:
    rows = result.aggregate()
    markdown = to_markdown(result)
    atomic_write_text(out / "dialog.md", markdown)
    atomic_write_text(
        out / "dialog.json",
        _json_with_one_line_per_run(
            {
                "preset": dataclasses.asdict(result.preset),
                "configuration": result.configuration,
                "env_id": env_id_for(result.configuration),
                "command": result.command,
                "sealed": result.sealed,
                "isolation": result.isolation,
                "skipped": result.skipped,
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
                        **{
                            k: (dataclasses.asdict(v) if k in ("success", "R@10") else v)
                            for k, v in c.items()
                        },
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
                        "bri": r.result.bri,
                        # per-dialog outcomes, so any comparison can be recomputed from the file
                        "ranks": np.asarray(r.result.ranks).tolist(),
                        "success_turn": np.asarray(r.result.success_turn).tolist(),
                        # dataset shoppers: the share of human captions by turn
                        **{k: v for k, v in r.result.meta.items() if k == "human_captions"},
                    }
                    for r in result.records
                ],
            }
        ),
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "dialog.csv", buffer.getvalue())
    atomic_write_bytes(out / "recall_at_10_by_turn.png", plot_recall(result))
    return [out / n for n in ("dialog.md", "dialog.json", "dialog.csv", "recall_at_10_by_turn.png")]


def user_directory(user: str) -> str:
    """A shopper's name as one directory name: as it is when it is one (``template``), else
    its characters that are safe in a path and a digest of the whole name."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", user):
        return user
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-")[-40:]
    return f"{slug}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"


def shopper_name(text: str) -> str:
    """A shopper name the envs take (``--train-users``, ``--eval-users``)."""
    if text.partition(":")[0] not in SHOPPERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no shopper: use one of {list(SHOPPERS)} (transformer:DIR, lm:DIR, dataset:SHOPPER)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """`fiq-gym bench`'s options."""
    parser = argparse.ArgumentParser(prog="fiq-gym bench", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_const", const="quick", dest="preset", help="the README's main job"
    )
    group.add_argument(
        "--full", action="store_const", const="full", dest="preset", help="more seeds, both users"
    )
    group.add_argument(
        "--preset", choices=sorted(PRESETS), dest="preset", help="a named preset (quick, full, ...)"
    )
    parser.add_argument(
        "--catalog", type=catalog_arg, help="catalog directory (default: the built-in synthetic catalog)"
    )
    parser.add_argument(
        "--config",
        default="default",
        choices=list(CONFIGURATIONS),
        help="named configuration to play (fiq_gym.envs.configurations; results go to OUT/PRESET-CONFIG "
        "unless it is the default)",
    )
    parser.add_argument(
        "--agents",
        nargs="+",
        choices=AGENTS,
        default=list(AGENTS),
        help="the agents to train and compare (default: all)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    parser.add_argument(
        "--train-users",
        nargs="+",
        type=shopper_name,
        help="shoppers to train with: template, transformer, or any shopper name the envs take "
        "(transformer:DIR, dataset:SHOPPER on an imported catalog) (default: the preset's)",
    )
    parser.add_argument(
        "--eval-users",
        nargs="+",
        type=shopper_name,
        help="shoppers to evaluate with, named as --train-users (default: the preset's)",
    )
    parser.add_argument(
        "--start",
        choices=START_MODES,
        default="uniform",
        help="where dialogs start: uniform, or annotated, the human-caption pairs of --start-split "
        "(training) and --eval-start-split (evaluation) of an imported catalog (docs/real_data.md)",
    )
    parser.add_argument(
        "--start-split",
        default="train",
        help="with --start annotated: the training dialogs' split (default train)",
    )
    parser.add_argument(
        "--eval-start-split",
        help="with --start annotated: the evaluation dialogs' split, e.g. val as in the papers (default: "
        "--start-split)",
    )
    parser.add_argument("--turns", type=int, default=5, help="dialog turns (max_turns)")
    parser.add_argument(
        "--out", type=absolute_path_object, default="runs/bench", help="run directory (also the cache)"
    )
    add_publish_argument(parser, "the reports to DIR/PRESET/")
    sealing = parser.add_mutually_exclusive_group()
    sealing.add_argument(
        "--isolation",
        choices=("process", "sealed", "none"),
        help="process: each agent in a process of its own (the default with --publish); sealed: the "
        "environment in a child process (the default otherwise: faster, the same numbers for honest agents); "
        "none: all in this process, for debugging (--publish refuses it)",
    )
    sealing.add_argument(
        "--sealed",
        dest="isolation",
        action="store_const",
        const="sealed",
        help="the same as --isolation sealed",
    )
    sealing.add_argument(
        "--unsealed",
        dest="isolation",
        action="store_const",
        const="none",
        help="the same as --isolation none",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run up to this many (shopper, seed) stages at once in separate processes (default 1; "
        "at most the number of cores: every stage uses one)",
    )
    parser.add_argument(
        "--no-slates",
        dest="slates",
        action="store_false",
        help="skip the full preset's slate section (python -m fiq_gym.benchmarks.slates, run after the dialog tables)",
    )
    # set by --jobs for the processes it starts: where the stage's records go, and the run directory
    parser.add_argument("--stage-records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.publish is not None and args.isolation == "none":
        parser.error("--publish needs the sealed harness: published tables never come from --unsealed runs")
    if args.isolation is None:
        args.isolation = "process" if args.publish is not None else "sealed"
    preset = PRESETS[args.preset or "quick"]
    name = preset.name if args.config == "default" else f"{preset.name}-{args.config}"
    publish_to = None if args.publish is None else prepare_publish_dir(parser, args.publish, name)
    command = "fiq-gym bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = run_benchmark(
        preset,
        args.run_dir or args.out / name,
        catalog=args.catalog,
        agents=args.agents,
        seeds=args.seeds,
        train_users=args.train_users,
        eval_users=args.eval_users,
        max_turns=args.turns,
        command=command.strip(),
        isolation=args.isolation,
        jobs=args.jobs,
        configuration=args.config,
        start=args.start,
        start_split=args.start_split,
        eval_start_split=args.eval_start_split,
    )
    if args.stage_records:
        # a stage run by another benchmark process (--jobs): hand it the records, write nothing else
        import pickle

        # plain fields: this module runs as __main__ here, so its classes would not unpickle
        records = [(r.agent, r.train_user, r.eval_user, r.seed, r.result) for r in result.records]
        budgets = {key: dataclasses.asdict(b) for key, b in result.budgets.items()}
        atomic_write_bytes(args.stage_records, pickle.dumps((records, budgets)))
        return 0
    written = write_outputs(result, args.out / name)
    if publish_to is not None:
        written += write_outputs(result, publish_to)
    print()
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    if preset.slate_section and args.slates and args.config == "default" and args.start == "uniform":
        seeds = args.seeds if args.seeds is not None else preset.seeds
        written = _slate_section(args, seeds, args.out / name, publish_to, command.strip())
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _slate_section(
    args: argparse.Namespace, seeds: Sequence[int], out: Path, publish_to: Path | None, command: str
) -> list[Path]:
    """The preset's slate section (:mod:`fiq_gym.benchmarks.slates`) into ``out`` (and
    ``publish_to``), its report naming this benchmark's command."""
    from fiq_gym.benchmarks import slates

    print("\nslate section (python -m fiq_gym.benchmarks.slates; --no-slates skips it)", flush=True)
    argv = ["--seeds", *map(str, seeds), "--out", str(out), "--no-progress"]
    if args.catalog:
        argv += ["--catalog", str(args.catalog)]
    slates.main(argv, command=command)
    written = [out / "slates.md", out / "slates.json"]
    if publish_to is not None:
        for path in list(written):
            target = publish_to / path.name
            atomic_write_text(target, path.read_text(encoding="utf-8"))
            written.append(target)
    return written


if __name__ == "__main__":
    sys.exit(main())
