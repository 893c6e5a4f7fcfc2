"""Which configurations are hard but learnable: R@10 by turn of random, greedy and supervised
agents on every named configuration (:mod:`fiq_gym.envs.configurations`), measured with the
sealed harness, and the verdict the leaderboard uses.

    python -m fiq_gym.benchmarks.configurations                    # writes results/configurations.md
    python -m fiq_gym.benchmarks.configurations --configurations default terse --rounds 20 --episodes 64 --out /tmp/c

A configuration is **hard but learnable** when the supervised retriever's R@10 at the last
turn is at most ``--hard-below`` (0.5) and rises at every turn: the task is not solved, and
each caption still helps. The retriever is trained exactly as the benchmark's ``supervised``
agent is (``fiq-gym train supervised``, ``--rounds`` rounds of 32 dialogs, template shopper
of the configuration); ``greedy`` shows the shortlist first stage's best unseen candidate
(the retriever shipped with the package), ``random`` a uniform item.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiq_gym.agents import supervised
from fiq_gym.agents.evaluate_checkpoint import evaluate_checkpoint
from fiq_gym.agents.random_agent import RandomAgent
from fiq_gym.agents.shortlist import ShortlistGreedyAgent
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.configurations import CONFIGURATIONS
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, training_evaluation_seed
from fiq_gym.envs.registration import env_id_for
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["Measurement", "is_hard", "measure", "to_markdown"]

RESULTS = default_results_dir()


@dataclass
class Measurement:
    configuration: str
    results: dict[str, EvaluationResult]  # agent -> result
    train_seconds: float


def recall_by_turn(result: EvaluationResult, k: int = 10) -> list[float]:
    """R@k after each turn 1..T."""
    return [row[f"R@{k}"] for row in result.per_turn()[1:]]


def is_hard(curve: Sequence[float], below: float) -> bool:
    """At most ``below`` at the last turn and strictly rising at every turn."""
    return curve[-1] <= below and all(b > a for a, b in itertools.pairwise(curve))


def measure(configuration: str, *, rounds: int, episodes: int, seed: int, runs: Path) -> Measurement:
    env_id = env_id_for(configuration)
    out = runs / configuration
    start = time.perf_counter()
    supervised.train(
        supervised.Args(
            env_id=env_id, rounds=rounds, seed=seed, eval_episodes=64, eval_every=rounds, out=str(out)
        ),
        progress=True,
    )
    train_seconds = time.perf_counter() - start
    eval_seed = training_evaluation_seed(seed)
    results = {
        "random": _random(env_id, episodes, eval_seed),
        "greedy": evaluate(
            ShortlistGreedyAgent(), env_id, episodes, eval_seed, name="greedy", action_mode="shortlist"
        ),
        "supervised": evaluate_checkpoint(out / "checkpoint", episodes=episodes, seed=eval_seed),
    }
    return Measurement(configuration, results, train_seconds)


def _random(env_id: str, episodes: int, seed: int) -> EvaluationResult:
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=64, vectorization_mode="vector_entry_point")
    try:
        return evaluate(RandomAgent.for_env(envs, seed=seed), envs, episodes, seed, name="random")
    finally:
        envs.close()


def to_markdown(
    measurements: Sequence[Measurement], *, rounds: int, episodes: int, below: float, command: str
) -> str:
    budget = " (the quick preset's budget)" if rounds == 250 else ""
    lines = [
        "# Configurations: how hard is each?",
        "",
        f"R@10 after each turn, {episodes} sealed evaluation dialogs per agent; the supervised retriever "
        f"trained {rounds} rounds x 32 dialogs{budget} on the configuration itself. "
        f"**Hard but learnable**: supervised R@10 at the last turn <= {below} and rising at every turn.",
        "",
        "| configuration | id | what it is |",
        "|---|---|---|",
        *(
            f"| {m.configuration} | `{env_id_for(m.configuration)}` | {CONFIGURATIONS[m.configuration].summary} |"
            for m in measurements
        ),
        "",
        "| configuration | agent | "
        + " | ".join(f"turn {t}" for t in range(1, _turns(measurements) + 1))
        + " | verdict |",
        "|---|---|" + "---:|" * _turns(measurements) + "---|",
    ]
    for m in measurements:
        curve = recall_by_turn(m.results["supervised"])
        verdict = (
            "hard but learnable" if is_hard(curve, below) else "not hard" if curve[-1] > below else "flat"
        )
        for agent, result in m.results.items():
            cells = " | ".join(f"{r:.3f}" for r in recall_by_turn(result))
            tail = f"**{verdict}**" if agent == "supervised" else ""
            lines.append(f"| {m.configuration} | {agent} | {cells} | {tail} |")
    lines += [
        "",
        "Supervised training time: "
        + ", ".join(f"{m.configuration} {m.train_seconds:.0f} s" for m in measurements)
        + " (including the first build of a configuration's catalog when it was not cached).",
        *provenance_lines(command),
    ]
    return "\n".join(lines)


def _turns(measurements: Sequence[Measurement]) -> int:
    return int(np.max([m.results["supervised"].turns for m in measurements]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument(
        "--rounds", type=int, default=250, help="supervised training rounds (32 dialogs each)"
    )
    parser.add_argument("--episodes", type=int, default=500, help="evaluation dialogs per agent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hard-below", type=float, default=0.5, help="R@10 at the last turn at most this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--runs", type=Path, help="where the retrievers go (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.episodes < 1:
        parser.error("--rounds and --episodes must be positive")
    refuse_unclean_publication(parser, args.out)
    command = command_line("fiq_gym.benchmarks.configurations", argv)
    with tempfile.TemporaryDirectory(prefix="fiq-gym-configurations-") as tmp:
        runs = args.runs or Path(tmp)
        measurements = []
        for name in args.configurations:
            measurements.append(
                measure(name, rounds=args.rounds, episodes=args.episodes, seed=args.seed, runs=runs)
            )
            print(
                name, [f"{r:.3f}" for r in recall_by_turn(measurements[-1].results["supervised"])], flush=True
            )
        text = to_markdown(
            measurements, rounds=args.rounds, episodes=args.episodes, below=args.hard_below, command=command
        )
    atomic_write_text(args.out / "configurations.md", text)
    print(text)


if __name__ == "__main__":
    main()
