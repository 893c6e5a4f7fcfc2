"""The RL question on slates: SB3 PPO and RLlib PPO on the shortlist slate beside their
equal-budget supervised control and the posterior reader's slates.

The full preset's slate section: ``fiq-gym bench --full`` runs it after the dialog tables, into
the same folder (published as ``benchmarks/results/full/slates.md``), and the leaderboard reads
it; ``python -m fiq_gym.benchmarks.slates`` runs it alone. Every agent plays the same fixed dialogs (``EvaluationSet.generate(N, episodes, seed=2021)``,
the leaderboard's seed) through the sealed harness, showing ``slate_size`` items a turn:

* ``random-slate``: K random items not shown yet (``slate`` mode), the floor;
* ``greedy-slate``: the first stage's K best candidates (``shortlist_slate`` mode), PPO's start;
* ``ppo-slate``: SB3 PPO with ``ShortlistActorCriticPolicy`` on the shortlist slate
  (``fiq-gym train ppo --action-mode shortlist_slate``), ``--timesteps`` env steps per seed,
  started near the first stage's ranking (``--first-stage-gain``);
* ``rllib-ppo-slate``: RLlib PPO with the same network as an RLModule
  (``fiq-gym train rllib-ppo --action-mode shortlist_slate``), the same steps, start and
  learning rate (needs the ``rllib`` extra; ``--engines sb3`` leaves it out);
* ``supervised-top-k``: the supervised dialog retriever trained for the same number of env
  steps (rounds x 32 dialogs x max_turns turns), showing its K best unseen items
  (:class:`~fiq_gym.agents.slate.TopScoresSlateAgent`, ``slate`` mode): the equal-budget control
  of both PPOs;
* ``posterior-top`` and ``posterior-partition``: the Bayesian reader of the shopper's captions
  and picks, showing its K most probable items or a slate planned for what the pick will tell
  (:mod:`fiq_gym.agents.slate_posterior`), the reference.

The report gives success by turn (means over seeds for the trained agents) and paired
differences with 95% bootstrap intervals over seeds and dialogs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import fiq_gym  # noqa: F401  (registers the env ids)
from fiq_gym.agents.random_agent import RandomSlateAgent
from fiq_gym.agents.retriever import RetrieverAgent
from fiq_gym.agents.shortlist import SB3ShortlistAgent, ShortlistGreedySlateAgent
from fiq_gym.agents.slate import TopScoresSlateAgent
from fiq_gym.agents.slate_posterior import posterior_slate_agent
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    git_revision,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, paired_difference
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["main", "run"]

EVAL_SEED = 2021  # the leaderboard's evaluation set
ENV_ID = "fiq_gym/FashionIQ-v3"
SUPERVISED_DIALOGS_PER_ROUND = 32
#: The PPO implementations the section trains (RLlib's needs the ``rllib`` extra).
ENGINES = ("sb3", "rllib")


def _success(result: EvaluationResult, turn: int) -> np.ndarray:
    s = result.success_turn
    return ((s >= 1) & (s <= turn)).astype(np.float64)


def _envs(args: argparse.Namespace, mode: str, num_envs: int = 16) -> gym.vector.VectorEnv:
    kwargs: dict[str, Any] = {"catalog": args.catalog, "action_mode": mode, "slate_size": args.slate_size}
    if mode == "shortlist_slate":
        kwargs.update(shortlist_size=args.shortlist_size, shortlist=args.shortlist)
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def supervised_rounds(timesteps: int, max_turns: int) -> int:
    """Supervised rounds with as many env steps as ``timesteps`` (each round plays 32 dialogs of
    ``max_turns`` turns; at least one)."""
    return max(1, round(timesteps / (SUPERVISED_DIALOGS_PER_ROUND * max_turns)))


def _train_ppo(args: argparse.Namespace, seed: int, out: Path) -> Any:
    from fiq_gym.agents.ppo import Args, train

    ppo_args = Args(
        catalog=args.catalog,
        action_mode="shortlist_slate",
        slate_size=args.slate_size,
        shortlist_size=args.shortlist_size,
        shortlist=args.shortlist,
        timesteps=args.timesteps,
        n_steps=32,
        batch_size=256,
        learning_rate=1e-3,
        first_stage_gain=args.first_stage_gain,
        seed=seed,
        eval_episodes=16,
        out=str(out / f"ppo-{seed}"),
    )
    model, _ = train(ppo_args, progress=args.progress)
    return model


def _train_rllib(args: argparse.Namespace, seed: int, out: Path) -> Any:
    from fiq_gym.agents.rllib_modules import load_rl_module
    from fiq_gym.agents.rllib_ppo import Args, train

    rllib_args = Args(
        catalog=args.catalog,
        action_mode="shortlist_slate",
        slate_size=args.slate_size,
        shortlist_size=args.shortlist_size,
        shortlist=args.shortlist,
        first_stage_gain=args.first_stage_gain,
        timesteps=args.timesteps,
        # SB3's rollout (32 steps x 16 dialogs) and minibatch, learning rate and epochs (SB3's 10)
        num_env_runners=0,
        envs_per_runner=16,
        train_batch_size=512,
        minibatch_size=256,
        num_epochs=10,
        learning_rate=1e-3,
        seed=seed,
        eval_episodes=16,
        out=str(out / f"rllib-ppo-{seed}"),
    )
    train(rllib_args, progress=args.progress)
    return load_rl_module(out / f"rllib-ppo-{seed}" / "checkpoint" / "algorithm")


def _train_supervised(args: argparse.Namespace, seed: int, out: Path) -> Any:
    from fiq_gym.agents.supervised import Args, train

    sup_args = Args(
        catalog=args.catalog,
        num_envs=SUPERVISED_DIALOGS_PER_ROUND,
        rounds=supervised_rounds(args.timesteps, 5),
        seed=seed,
        eval_episodes=16,
        eval_every=10**9,
        out=str(out / f"supervised-{seed}"),
    )
    net, _ = train(sup_args, progress=args.progress)
    return net


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Train and evaluate: every agent's per-dialog success turns (by name, one list per seed)
    and the trained agents' training seconds."""
    runs: dict[str, Any] = {}
    train_seconds: dict[str, list[float]] = {"supervised-top-k": [], "ppo-slate": []}
    if "rllib" in args.engines:
        train_seconds["rllib-ppo-slate"] = []

    def play(name: str, mode: str, make_agent: Any) -> None:
        envs = _envs(args, mode)
        try:
            start = time.perf_counter()
            result = evaluate(make_agent(envs), envs, episodes=args.episodes, seed=EVAL_SEED, name=name)
            seconds = time.perf_counter() - start
        finally:
            envs.close()
        entry = runs.setdefault(name, {"mode": mode, "success_turn": [], "seconds": []})
        entry["success_turn"].append(result.success_turn.tolist())
        entry["seconds"].append(round(seconds, 1))
        by = [round(float(_success(result, t).mean()), 3) for t in range(1, 6)]
        print(f"{name:<20} success by turn {by} ({seconds:.0f} s)", flush=True)

    play("random-slate", "slate", lambda envs: RandomSlateAgent.for_env(envs, seed=0))
    play("greedy-slate", "shortlist_slate", lambda envs: ShortlistGreedySlateAgent(args.slate_size))
    beliefs = args.beliefs
    play("posterior-top", "slate", lambda envs: posterior_slate_agent(envs, "top", beliefs=beliefs))
    play(
        "posterior-partition", "slate", lambda envs: posterior_slate_agent(envs, "partition", beliefs=beliefs)
    )
    with tempfile.TemporaryDirectory(prefix="fiq-gym-slates-") as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            net = _train_supervised(args, seed, Path(tmp))
            train_seconds["supervised-top-k"].append(round(time.perf_counter() - start, 1))
            play(
                "supervised-top-k",
                "slate",
                lambda envs, net=net: TopScoresSlateAgent(
                    RetrieverAgent(net, inner_env(envs).gallery), args.slate_size
                ),
            )
            start = time.perf_counter()
            model = _train_ppo(args, seed, Path(tmp))
            train_seconds["ppo-slate"].append(round(time.perf_counter() - start, 1))
            play("ppo-slate", "shortlist_slate", lambda envs, model=model: SB3ShortlistAgent(model))
            if "rllib" in args.engines:
                from fiq_gym.agents.rllib_modules import RLlibAgent

                start = time.perf_counter()
                # train() starts a local Ray instance and shuts it down before its evaluation:
                # nothing of Ray's runs beside the sealed harness.
                module = _train_rllib(args, seed, Path(tmp))
                train_seconds["rllib-ppo-slate"].append(round(time.perf_counter() - start, 1))
                play("rllib-ppo-slate", "shortlist_slate", lambda envs, module=module: RLlibAgent(module))
    return runs, train_seconds


COMPARISONS = (
    ("ppo-slate", "supervised-top-k", "PPO against its equal-budget supervised control"),
    ("ppo-slate", "greedy-slate", "PPO against the first stage it starts from"),
    ("ppo-slate", "posterior-top", "PPO against the reader's most probable slate"),
    ("ppo-slate", "posterior-partition", "PPO against the reader's planned slate"),
    ("rllib-ppo-slate", "supervised-top-k", "RLlib PPO against the same control"),
    ("rllib-ppo-slate", "greedy-slate", "RLlib PPO against the first stage it starts from"),
    ("rllib-ppo-slate", "posterior-top", "RLlib PPO against the reader's most probable slate"),
    ("rllib-ppo-slate", "ppo-slate", "the two engines, one network"),
    ("posterior-partition", "posterior-top", "planning the slate, over the most probable one"),
    ("supervised-top-k", "posterior-top", "the supervised control against the reader"),
)


def _matrix(runs: dict[str, Any], name: str, turn: int, seeds: int) -> np.ndarray:
    """(seeds, dialogs) success by ``turn``; an untrained agent's one run repeated per seed."""
    found = np.asarray(runs[name]["success_turn"])
    if len(found) == 1:
        found = np.repeat(found, seeds, axis=0)
    return ((found >= 1) & (found <= turn)).astype(np.float64)


def _reflowed(text: str) -> list[str]:
    """Docstring prose as markdown lines: each paragraph and each bullet on one line."""
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            lines.append("")
        elif lines and lines[-1] and not stripped.startswith("* "):
            lines[-1] += " " + stripped
        else:
            lines.append(stripped)
    return lines


def to_markdown(data: dict[str, Any]) -> str:
    runs, meta = data["runs"], data["meta"]
    seeds = len(meta["seeds"])
    lines = [
        "# Slates: the RL question",
        "",
        f"Command: `{meta['command']}`  ",
        f"Revision: {meta['revision']}  ",
        f"Load average (1, 5, 15 min) when the run started: {meta['load']}",
        "",
        *_reflowed((__doc__ or "").strip().split("\n\n", 1)[1]),
        "",
        f"`{ENV_ID}` on the {meta['catalog']} catalog, K = {meta['slate_size']} items a turn, M = "
        f"{meta['shortlist_size']} candidates in the shortlist slate, {meta['episodes']:,} dialogs, "
        f"seeds {meta['seeds']}, {meta['timesteps']:,} env steps of training per seed "
        f"(supervised: {meta['supervised_rounds']} rounds of {SUPERVISED_DIALOGS_PER_ROUND} dialogs), "
        f"PPO's first-stage gain at the start {meta.get('first_stage_gain', 0.0):g}, "
        f"engines: {', '.join(meta.get('engines', ['sb3']))}.",
        "",
        "| agent | action mode | success@1 | success@2 | success@3 | success@4 | success@5 | training (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    train = data["train_seconds"]
    for name, entry in runs.items():
        cells = [f"{_matrix(runs, name, t, 1).mean():.3f}" for t in range(1, 6)]
        seconds = f"{np.mean(train[name]):.0f}" if train.get(name) else "-"
        lines.append(f"| {name} | `{entry['mode']}` | " + " | ".join(cells) + f" | {seconds} |")
    lines += [
        "",
        "Paired differences in success, 95% bootstrap intervals over seeds and dialogs (the "
        "untrained agents' one run paired with each seed):",
        "",
        "| comparison | success@3 | success@5 | what it asks |",
        "|---|---:|---:|---|",
    ]
    for a, b, why in COMPARISONS:
        if a not in runs or b not in runs:
            continue
        cells = [
            str(paired_difference(_matrix(runs, a, t, seeds), _matrix(runs, b, t, seeds), seed=2023))
            for t in (3, 5)
        ]
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + f" | {why} |")
    ray = f"ray {meta['ray']}" if meta.get("ray") else ""
    lines += provenance_lines(meta["command"], load=meta["load"], extra_libraries=ray)
    return "\n".join(lines) + "\n"


def leaderboard_lines(data: dict[str, Any], source: str) -> list[str]:
    """The leaderboard's slate section from a ``slates.json`` (``source``: its path as the
    page names it): success by turn 3 and 5 and over turns 1-5, mean ± std over training seeds
    (the untrained agents' one run has no spread), and the paired comparisons of PPO."""
    runs, meta = data["runs"], data["meta"]
    seeds = len(meta["seeds"])
    lines = [
        f"## Slates (`{ENV_ID}`, `slate` / `shortlist_slate` modes)",
        "",
        f"{meta['episodes']:,} fixed dialogs, K = {meta['slate_size']} items a turn (PPO: of M = "
        f"{meta['shortlist_size']} first-stage candidates), {meta['timesteps']:,} env steps of training per "
        f"seed, seeds {meta['seeds']}. Success: the target is in a slate by that turn. The reference rows "
        "are the Bayesian reader of captions and picks (untrained); `supervised-top-k` is PPO's "
        "equal-budget supervised control.",
        "",
        "| agent | action mode | success@3 | success@5 | success 1-5 |",
        "|---|---|---:|---:|---:|",
    ]
    order = sorted(runs, key=lambda name: -_matrix(runs, name, 5, 1).mean())
    for name in order:
        cells = []
        for turns in ((3,), (5,), (1, 2, 3, 4, 5)):
            per_seed = np.mean([_matrix(runs, name, t, 1).mean(axis=1) for t in turns], axis=0)
            spread = f" ± {np.std(per_seed, ddof=1):.3f}" if len(per_seed) > 1 else ""
            cells.append(f"{per_seed.mean():.3f}{spread}")
        label = f"**{name}**" if name.startswith("posterior") else name
        lines.append(f"| {label} | `{runs[name]['mode']}` | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences in success@5, 95% bootstrap intervals over seeds and dialogs:", ""]
    for a, b, why in COMPARISONS:
        if a in runs and b in runs and a.endswith("ppo-slate"):
            diff = paired_difference(_matrix(runs, a, 5, seeds), _matrix(runs, b, 5, seeds), seed=2023)
            lines.append(f"- {a} - {b}: {diff} ({why})")
    lines += [
        "",
        f"Source: `{source}`, from `{meta['command']}` at revision {meta['revision']}.",
        "",
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fiq_gym.benchmarks.slates", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=1000,
        help="evaluation dialogs (the same for every agent; the leaderboard's 1,000 by default)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of PPO and its control"
    )
    parser.add_argument(
        "--timesteps",
        type=int,
        default=25_000,
        help="env steps of training per seed (each PPO and, in rounds, supervised; the full preset's "
        "shortlist budget by default)",
    )
    parser.add_argument(
        "--first-stage-gain",
        type=float,
        default=3.0,
        help="PPO's starting gain on the first stage's score (3: it starts near the greedy slate; 0: near "
        "uniform over the candidates)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        help="which PPOs to train (default: sb3, and rllib when Ray RLlib is installed: the rllib extra, "
        'pip install -e ".[rllib]")',
    )
    parser.add_argument("--slate-size", type=int, default=4, help="K, the items shown a turn")
    parser.add_argument(
        "--shortlist-size", type=int, default=32, help="M, the candidates of the shortlist slate"
    )
    parser.add_argument(
        "--shortlist", default="retriever", help="the shortlist's first stage (retriever or random)"
    )
    parser.add_argument("--catalog", default=None, help="catalog directory (default: the built-in catalog)")
    parser.add_argument(
        "--beliefs",
        choices=("predicted", "labels"),
        default="predicted",
        help="what the posterior reader believes of the items: predicted (what agents see) or labels",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument(
        "--out",
        type=Path,
        default=default_results_dir() / "full",
        help="where slates.md and .json go (default: the full preset's published folder)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, command: str | None = None) -> int:
    """Run the section; ``command``: what the report names as its command (``fiq-gym bench
    --full`` passes its own), default this module's command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    have_ray = importlib.util.find_spec("ray") is not None
    if args.engines is None:
        args.engines = list(ENGINES) if have_ray else ["sb3"]
        if not have_ray:
            print(
                'slates: Ray RLlib is not installed, so the rllib-ppo-slate row is left out (pip install -e ".[rllib]" '
                "-c constraints-rllib.txt adds it)",
                flush=True,
            )
    if "sb3" not in args.engines:
        parser.error("--engines must include sb3: the report's comparisons are PPO's (add rllib beside it)")
    if "rllib" in args.engines and not have_ray:
        parser.error(
            'the rllib engine needs Ray RLlib: pip install -e ".[rllib]" -c constraints-rllib.txt, '
            "or pass --engines sb3"
        )
    refuse_unclean_publication(parser, args.out)
    meta = {
        "command": command or command_line("fiq_gym.benchmarks.slates", argv),
        "revision": git_revision(),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "catalog": args.catalog or "built-in",
        "episodes": args.episodes,
        "seeds": args.seeds,
        "timesteps": args.timesteps,
        "supervised_rounds": supervised_rounds(args.timesteps, 5),
        "slate_size": args.slate_size,
        "shortlist_size": args.shortlist_size,
        "first_stage_gain": args.first_stage_gain,
        "engines": args.engines,
    }
    if "rllib" in args.engines:
        import ray

        meta["ray"] = ray.__version__
    runs, train_seconds = run(args)
    data = {"meta": meta, "runs": runs, "train_seconds": train_seconds}
    text = to_markdown(data)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "slates.json", json.dumps(data) + "\n")
    atomic_write_text(args.out / "slates.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
