"""RLlib PPO beside Stable-Baselines3 PPO on the shortlist: one env, one network, one loss, one
budget; the training return against env steps (read back from each run's TensorBoard events)
and the sealed evaluation of each final checkpoint. Needs the ``rllib`` extra.

    python -m fiq_gym.benchmarks.rllib_learning_curve                   # results/rllib_learning_curve.{md,png}
    python -m fiq_gym.benchmarks.rllib_learning_curve --timesteps 4096 --eval-episodes 64 --out /tmp/lc

What is held equal: the env (`fiq_gym/FashionIQ-v3`, shortlist mode, the shipped first stage,
template shopper, percentile reward), 16 dialogs sampled at once (SB3: one native vector env
of 16; RLlib: ``--num-env-runners`` runners of 16 / runners each), 1,024 env steps per update,
minibatches of 256, 4 epochs, Adam at 3e-4, gamma 0.99, GAE lambda 0.95, ratio clip 0.2,
value coefficient 0.5, gradient clip 0.5, no entropy bonus, and the policy network
(:class:`~fiq_gym.agents.rllib_modules.ShortlistRLModule` is the SB3 shortlist policy's
network). What differs: the engines' code (advantage normalisation, value clipping: RLlib
clips value targets at 10, SB3 does not; returns are at most 5 here) and where sampling runs.

The return is each engine's moving mean over its last 100 finished dialogs (SB3's
``rollout/ep_rew_mean`` from ``VecMonitor``, RLlib's ``episode_return_mean``, both logged as
``charts/episode_return_mean`` against env steps), so the two curves are read the same way.
One training seed per engine by default: a curve is one run, and the final evaluations'
intervals cover the evaluation dialogs only.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fiq_gym.agents import ppo, rllib_ppo
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.evaluation import EvaluationResult
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["Curve", "read_scalars", "run"]

RESULTS = default_results_dir()
#: Env steps per update, dialogs sampled at once, and the update's shape: the same for both.
STEPS_PER_UPDATE = 1024
DIALOGS = 16


@dataclass
class Curve:
    """One engine's run: (env steps, mean training return) points and its final evaluation."""

    engine: str
    steps: np.ndarray
    returns: np.ndarray
    seconds: float
    result: EvaluationResult


def read_scalars(directory: Path, tag: str) -> list[tuple[int, float]]:
    """Every (step, value) of scalar ``tag`` in the TensorBoard event files under ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: list[tuple[int, float]] = []
    files = sorted(directory.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {directory}")
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags()["scalars"]:
            points += [(int(e.step), float(e.value)) for e in events.Scalars(tag)]
    return sorted(points)


def train_sb3(
    timesteps: int,
    seed: int,
    eval_episodes: int,
    out: Path,
    catalog: str | None = None,
    shortlist: str = "retriever",
) -> Curve:
    args = ppo.Args(
        catalog=catalog,
        shortlist=shortlist,
        action_mode="shortlist",
        num_envs=DIALOGS,
        n_steps=STEPS_PER_UPDATE // DIALOGS,
        batch_size=256,
        n_epochs=4,
        timesteps=timesteps,
        seed=seed,
        eval_episodes=eval_episodes,
        out=str(out),
    )
    start = time.perf_counter()
    _, result = ppo.train(args, progress=False)
    seconds = time.perf_counter() - start
    points = read_scalars(out / "tb", "charts/episode_return_mean")
    return Curve("Stable-Baselines3 PPO", *_arrays(points), seconds, result)


def train_rllib(
    timesteps: int,
    seed: int,
    eval_episodes: int,
    runners: int,
    out: Path,
    catalog: str | None = None,
    shortlist: str = "retriever",
) -> Curve:
    if DIALOGS % max(1, runners):
        raise ValueError(f"--num-env-runners must divide {DIALOGS}, got {runners}")
    args = rllib_ppo.Args(
        catalog=catalog,
        shortlist=shortlist,
        num_env_runners=runners,
        envs_per_runner=DIALOGS // max(1, runners),
        # By env steps, as SB3 counts its budget: an iteration samples at least one update's
        # worth, and its count is not what the two engines share.
        timesteps=timesteps,
        train_batch_size=STEPS_PER_UPDATE,
        minibatch_size=256,
        num_epochs=4,
        seed=seed,
        eval_episodes=eval_episodes,
        out=str(out),
    )
    start = time.perf_counter()
    _, result = rllib_ppo.train(args, progress=False)
    seconds = time.perf_counter() - start
    points = read_scalars(out / "tb", "charts/episode_return_mean")
    return Curve(f"RLlib PPO ({runners} env runners)", *_arrays(points), seconds, result)


def _arrays(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([p[0] for p in points], dtype=np.int64)
    returns = np.array([p[1] for p in points], dtype=np.float64)
    return steps, returns


def _return_at(curve: Curve, step: int) -> float:
    """The curve's last reading at or before ``step`` (NaN before its first)."""
    before = np.flatnonzero(curve.steps <= step)
    return float(curve.returns[before[-1]]) if len(before) else float("nan")


def plot(curves: Sequence[Curve]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for curve in curves:
        ax.plot(curve.steps, curve.returns, marker=".", label=curve.engine)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return (mean of last 100 dialogs)")
    ax.set_title("PPO on the shortlist: RLlib and Stable-Baselines3")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def to_markdown(curves: Sequence[Curve], timesteps: int, seed: int, command: str, load: str = "n/a") -> str:
    lines = [
        "# RLlib PPO beside Stable-Baselines3 PPO (shortlist)",
        "",
        f"One training run per engine (seed {seed}), {timesteps:,} env steps each, on "
        "`fiq_gym/FashionIQ-v3` in shortlist mode (K = 32, the shipped first stage, template shopper, "
        "percentile reward). What is held equal and what differs: the module docstring "
        "(`python -m fiq_gym.benchmarks.rllib_learning_curve --help`).",
        "",
        "![training return against env steps](rllib_learning_curve.png)",
        "",
        "## Training return (mean over the last 100 dialogs)",
        "",
        "| env steps | " + " | ".join(c.engine for c in curves) + " |",
        "|---:|" + "---:|" * len(curves),
    ]
    marks = sorted({int(s) for c in curves for s in c.steps})
    every = max(1, len(marks) // 12)
    shown = marks[every - 1 :: every] if marks else []
    if marks and (not shown or shown[-1] != marks[-1]):
        shown.append(marks[-1])
    for step in shown:
        lines.append(f"| {step:,} | " + " | ".join(f"{_return_at(c, step):.3f}" for c in curves) + " |")
    lines += [
        "",
        "## Final checkpoints, sealed evaluation",
        "",
        "| engine | training wall time | dialogs | R@10 at turn 5 | success at turn 5 | mean percentile |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in curves:
        last = c.result.per_turn()[-1]
        lines.append(
            f"| {c.engine} | {c.seconds:.0f} s | {len(c.result.ranks)} | {last['R@10']:.3f} | "
            f"{last['success_rate']:.3f} | {last['mean_percentile']:.3f} |"
        )
    lines += [
        "",
        "Wall time includes each run's start-up and its final evaluation; other work on the machine "
        f"moves it (load average when the run started: {load}).",
        *provenance_lines(command, extra_libraries=f"ray {__import__('ray').__version__}"),
    ]
    return "\n".join(lines)


def run(
    *,
    timesteps: int,
    seed: int,
    eval_episodes: int,
    runners: int,
    out: Path,
    runs: Path,
    command: str,
    catalog: str | None = None,
    shortlist: str = "retriever",
) -> str:
    """Train both engines, write ``out/rllib_learning_curve.md`` and ``.png``; return the text.
    ``catalog`` and ``shortlist`` are for tests on small catalogs (the table says the default)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    curves = [
        train_sb3(timesteps, seed, eval_episodes, runs / "sb3-ppo", catalog, shortlist),
        train_rllib(timesteps, seed, eval_episodes, runners, runs / "rllib-ppo", catalog, shortlist),
    ]
    text = to_markdown(curves, timesteps, seed, command, load)
    atomic_write_bytes(out / "rllib_learning_curve.png", plot(curves))
    atomic_write_text(out / "rllib_learning_curve.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=25_000, help="env steps per engine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=500)
    parser.add_argument("--num-env-runners", type=int, default=2, help="RLlib env runners (divides 16)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--runs", type=Path, help="where the two runs go (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.timesteps < STEPS_PER_UPDATE or args.eval_episodes < 1:
        parser.error(f"--timesteps must be at least {STEPS_PER_UPDATE} and --eval-episodes at least 1")
    refuse_unclean_publication(parser, args.out)
    command = command_line("fiq_gym.benchmarks.rllib_learning_curve", argv)
    with tempfile.TemporaryDirectory(prefix="fiq-gym-lc-") as tmp:
        runs = args.runs or Path(tmp)
        print(
            run(
                timesteps=args.timesteps,
                seed=args.seed,
                eval_episodes=args.eval_episodes,
                runners=args.num_env_runners,
                out=args.out,
                runs=runs,
                command=command,
            )
        )


if __name__ == "__main__":
    main()
