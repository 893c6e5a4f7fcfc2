"""The shortlist DQN's learning curve under its old defaults (the env's percentile reward,
learning rate 1e-3), with the reward alone changed to reciprocal ranks, and under its defaults
since (reciprocal ranks, 1e-4): success by turn 5 of ``fiq-gym train dqn``'s model, evaluated
through the sealed harness at several points of one training run each, beside the greedy first
stage it starts near.

    python -m fiq_gym.benchmarks.dqn_curve                     # 10,000 steps, seed 0; results/
    python -m fiq_gym.benchmarks.dqn_curve --timesteps 2000 --points 2 --episodes 32 --out /tmp/dqn
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from fiq_gym.agents import dqn
from fiq_gym.agents.shortlist import SB3ShortlistAgent, ShortlistGreedyAgent
from fiq_gym.benchmarks.publishing import add_out_argument, command_line, provenance_lines
from fiq_gym.envs.evaluation import EvaluationResult, evaluate, paired_difference, training_evaluation_seed
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["VARIANTS", "run"]

#: (name, the trainer's arguments that differ from its defaults, what it is): the old defaults,
#: the reward alone changed, and the defaults since.
VARIANTS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("percentile, lr 1e-3", {"reward": "percentile", "learning_rate": 1e-3}, "the old defaults"),
    ("reciprocal_rank, lr 1e-3", {"reward": "reciprocal_rank", "learning_rate": 1e-3}, "the reward alone"),
    ("reciprocal_rank, lr 1e-4", {}, "the defaults"),
)
_TURN = 5


def _successes(result: EvaluationResult) -> np.ndarray:
    """1.0 for each dialog whose target was shown by turn 5."""
    turn = result.success_turn
    return ((turn >= 1) & (turn <= _TURN)).astype(np.float64)


class _Checkpoints(BaseCallback):
    """Evaluates the model when the env steps reach each of ``at`` (within one ``learn`` call,
    so the exploration schedule is the trainer's)."""

    def __init__(self, at: Sequence[int], evaluate_model: Any) -> None:
        super().__init__()
        self.at, self.evaluate_model = sorted(at), evaluate_model
        self.results: dict[int, EvaluationResult] = {}

    def _on_step(self) -> bool:
        while self.at and self.num_timesteps >= self.at[0]:
            step = self.at.pop(0)
            self.results[step] = self.evaluate_model(self.model)
            print(f"  {step:>6} steps: success@5 {_successes(self.results[step]).mean():.3f}", flush=True)
        return True


def run(timesteps: int, points: int, episodes: int, seed: int, out: Path, command: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    eval_seed = training_evaluation_seed(seed)
    steps = sorted({round(timesteps * i / points) for i in range(points + 1)})

    def evaluate_model(model: Any) -> EvaluationResult:
        return evaluate(
            SB3ShortlistAgent(model), "fiq_gym/FashionIQ-v3", episodes, eval_seed, action_mode="shortlist"
        )

    greedy = evaluate(
        ShortlistGreedyAgent(), "fiq_gym/FashionIQ-v3", episodes, eval_seed, action_mode="shortlist"
    )
    names = [name for name, _, _ in VARIANTS]
    curves: dict[str, dict[int, EvaluationResult]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, changes, _) in enumerate(VARIANTS):
            print(name, flush=True)
            args = dataclasses.replace(
                dqn.Args(), **changes, timesteps=timesteps, seed=seed, out=str(Path(tmp) / str(index))
            )
            model = dqn.build_model(args)
            checkpoints = _Checkpoints(steps[1:], evaluate_model)
            checkpoints.results[0] = evaluate_model(model)
            started = time.perf_counter()
            model.learn(total_timesteps=timesteps, callback=checkpoints)
            seconds[name] = time.perf_counter() - started
            model.get_env().close()  # type: ignore[union-attr]
            curves[name] = checkpoints.results
    last = steps[-1]
    final = {name: _successes(curves[name][last]) for name in names}
    versus_old = {name: paired_difference(final[name], final[names[0]]) for name in names[1:]}
    drop = {name: paired_difference(final[name], _successes(curves[name][0])) for name in names}
    greedy_success = float(_successes(greedy).mean())

    def interval(d: Any) -> str:
        return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"

    lines = [
        "# The shortlist DQN's learning curve: rewards and learning rates",
        "",
        f"`fiq-gym train dqn`'s model (16 envs, K = 32 candidates from the shipped first stage, template shopper, "
        f"`fiq_gym/FashionIQ-v3`, its other defaults), trained {timesteps:,} env steps with seed {seed} in each "
        f"variant, evaluated through the sealed harness on the same {episodes} dialogs (seed {eval_seed}, the "
        "trainer's own set) at each point of one `learn` call. Success@5: the target shown by turn 5. The "
        "untrained network already plays near the greedy first stage (step 0).",
        "",
        "| env steps | " + " | ".join(f"{name} ({what})" for name, _, what in VARIANTS) + " |",
        "|---:|" + "---:|" * len(VARIANTS),
    ]
    for step in steps:
        cells = " | ".join(f"{_successes(curves[n][step]).mean():.3f}" for n in names)
        lines.append(f"| {step:,} | {cells} |")
    lines += [
        "",
        f"Greedy first stage (`shortlist-greedy`) on the same dialogs: {greedy_success:.3f}.",
        "",
        f"Paired differences in success@5 (95% bootstrap over the dialogs), at {last:,} steps against the old "
        "defaults: " + "; ".join(f"{n}: {interval(versus_old[n])}" for n in names[1:]) + f". From step 0 to "
        f"{last:,} steps: " + "; ".join(f"{n}: {interval(drop[n])}" for n in names) + ".",
        "",
        "Training seconds (with the evaluations): "
        + ", ".join(f"{n} {seconds[n]:.0f} s" for n in names)
        + ". One training seed: the intervals cover the evaluation dialogs only.",
        "",
        "![success by turn 5 against env steps](dqn_learning_curve.png)",
    ]
    lines += provenance_lines(command, load=load)
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    _plot(steps, curves, greedy_success, out / "dqn_learning_curve.png")
    atomic_write_text(out / "dqn_learning_curve.md", text)
    atomic_write_json(
        out / "dqn_learning_curve.json",
        {
            "command": command,
            "episodes": episodes,
            "eval_seed": eval_seed,
            "greedy_success_at_5": greedy_success,
            "curves": {
                n: {str(k): float(_successes(r).mean()) for k, r in c.items()} for n, c in curves.items()
            },
            "per_dialog_at_last": {n: final[n].tolist() for n in names},
        },
    )
    return text


def _plot(
    steps: list[int], curves: dict[str, dict[int, EvaluationResult]], greedy: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for (name, _, what), marker in zip(VARIANTS, ("o", "s", "^"), strict=True):
        axes.plot(
            steps,
            [_successes(curves[name][s]).mean() for s in steps],
            marker=marker,
            label=f"{name} ({what})",
        )
    axes.axhline(greedy, color="gray", linestyle="--", label="greedy first stage")
    axes.set_xlabel("env steps")
    axes.set_ylabel("success by turn 5")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    axes.set_title("shortlist DQN")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=10_000, help="env steps of each run (default 10000)")
    parser.add_argument("--points", type=int, default=4, help="evaluations after step 0 (default 4)")
    parser.add_argument("--episodes", type=int, default=256, help="evaluation dialogs (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    print(
        run(
            args.timesteps,
            args.points,
            args.episodes,
            args.seed,
            args.out,
            command_line("fiq_gym.benchmarks.dqn_curve", argv),
        )
    )


if __name__ == "__main__":
    main()
