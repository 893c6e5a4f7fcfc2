"""Where planning matters: what choosing a slate well adds over showing the most probable items.

    python -m fiq_gym.benchmarks.planning_headroom                  # results/planning_headroom.md and .json
    python -m fiq_gym.benchmarks.planning_headroom --configurations default --episodes 200 --out /tmp/p

Before a slate configuration is registered, this measures whether planning pays there. Each
dialog of the leaderboard's evaluation set (``EvaluationSet.generate(N, 1000, seed=2021)``)
starts as the env's do (a caption about the first shown item); then each turn the posterior
reader (:mod:`fiq_gym.agents.slate_posterior`, what any agent sees: predicted attributes
through the shipped readout) shows K items; the dialog succeeds when the target is among them,
else the configuration's template shopper picks the slate item most like its target
(:meth:`~fiq_gym.users.template.TemplateUser.pick`) and captions the target against it. The
policies play the same dialogs with the same shopper seeds: ``top`` (the K most probable
items), ``partition`` (a slate chosen for what the shopper's pick will tell the next slate)
and, where asked (``--policies``), ``horizon`` (the same, for every turn left). The K = 1
rows are the index setting's ``posterior-map``, for scale. The report gives success by turn
and the paired difference of each planning policy over ``top``, with 95% bootstrap intervals
over dialogs.

The simulation calls the shopper directly (the env has no slate mode yet); its turns follow
the env's rules (turn 0 caption, then up to ``max_turns`` displays, seen items never shown
again).
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
from fiq_gym.agents.posterior import label_beliefs, posterior_agent
from fiq_gym.agents.slate_posterior import SLATE_POLICIES, SlateReader, slate_of
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    git_revision,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.evaluation import EvaluationSet, paired_difference
from fiq_gym.envs.inner import inner_env
from fiq_gym.envs.registration import env_id_for
from fiq_gym.users.template import TemplateUser
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["POLICIES", "main", "simulate"]

POLICIES = SLATE_POLICIES
#: What ``--policies`` defaults to (the policies of the published tables).
DEFAULT_POLICIES = ("top", "partition")
FEEDBACK = ("caption", "pick")
EVAL_SEED = 2021  # the leaderboard's evaluation set


def simulate(
    configuration: str,
    policy: str,
    slate_size: int,
    episodes: int,
    seed: int = 0,
    max_turns: int = 5,
    feedback: str = "caption",
) -> np.ndarray:
    """(episodes,) the turn each dialog's target was in the slate (1..max_turns), -1 never.
    ``feedback``: ``"caption"`` (the pick and a caption about it) or ``"pick"`` (the pick
    only, after the first caption: a shopper that clicks, as in recommender slates)."""
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {list(FEEDBACK)}, got {feedback!r}")
    env = gym.make(env_id_for(configuration))
    try:
        inner = inner_env(env)
        user = inner.user
        if not isinstance(user, TemplateUser):
            raise ValueError(f"{configuration} has no template shopper")
        reader_agent = posterior_agent(env)  # the likelihood and beliefs of an evaluable agent
        truth = label_beliefs(inner.catalog, inner.gallery)
        # the shopper itself, on the items in play (indices of the gallery, like the agent's)
        shopper = user.imagining(truth.codes, truth.categories, truth.luma)
        believed = user.imagining(
            reader_agent.items.codes, reader_agent.items.categories, reader_agent.items.luma
        )
        eval_set = EvaluationSet.generate(inner.num_items, episodes, seed=EVAL_SEED)
    finally:
        env.close()
    found = np.full(episodes, -1, dtype=np.int64)
    for d in range(episodes):
        rng = np.random.default_rng([seed, d])
        target, first = int(eval_set.targets[d]), int(eval_set.shown[d])
        reader = SlateReader(reader_agent.likelihood, reader_agent.items, believed)
        caption = shopper.describe(np.array([target]), np.array([first]), rng).texts[0]
        reader.observe(np.array([first]), 0, caption)
        for turn in range(1, max_turns + 1):
            p = reader.belief()
            left = max_turns - turn + 1
            slate = slate_of(policy, p, slate_size, left, believed)
            if target in slate:
                found[d] = turn
                break
            picked = int(shopper.pick(np.array([target]), slate)[0])
            caption = shopper.describe(np.array([target]), slate[picked : picked + 1], rng).texts[0]
            reader.observe(slate, picked, caption if feedback == "caption" else None)
    return found


def success_by(found: np.ndarray, turn: int) -> np.ndarray:
    return ((found >= 1) & (found <= turn)).astype(np.float64)


def to_markdown(measured: dict[str, Any], meta: dict[str, str], feedback: str = "caption") -> str:
    lines = [
        "# Where planning matters: slates" + ("" if feedback == "caption" else ", a shopper that only picks"),
        "",
        f"Command: `{meta['command']}`  ",
        f"Revision: {meta['revision']}  ",
        f"Load average (1, 5, 15 min) when the run started: {meta['load']}",
        "",
        (__doc__ or "").split("\n\n")[2].replace("\n", " "),
    ]
    if feedback == "pick":
        lines += [
            "",
            "Here the shopper answers each slate with its pick only (after the first caption, "
            "which starts every dialog): the click feedback of recommender slates, where reading "
            "captions cannot help and what the slate asks is all there is to learn from.",
        ]
    for configuration, data in measured.items():
        lines += [
            "",
            f"## {configuration} (`{env_id_for(configuration)}`), {data['episodes']:,} dialogs",
            "",
            "| K | policy | " + " | ".join(f"success@{t}" for t in range(1, 6)) + " | seconds |",
            "|---:|---|" + "---:|" * 6,
        ]
        for key, run in data["runs"].items():
            k, policy = key.split(":")
            found = np.asarray(run["found"])
            cells = [f"{success_by(found, t).mean():.3f}" for t in range(1, 6)]
            lines.append(f"| {k} | {policy} | " + " | ".join(cells) + f" | {run['seconds']:.0f} |")
        planners = [p for p in data.get("policies", DEFAULT_POLICIES) if p != "top"]
        lines += ["", "Planning over `top`, paired over dialogs (95% bootstrap interval):", ""]
        for k in data["slate_sizes"]:
            if k == 1:
                continue
            top = np.asarray(data["runs"][f"{k}:top"]["found"])
            for policy in planners:
                planned = np.asarray(data["runs"][f"{k}:{policy}"]["found"])
                diffs = [
                    f"turn {t}: {paired_difference(success_by(planned, t)[None], success_by(top, t)[None], seed=2023)}"
                    for t in range(1, 6)
                ]
                lines.append(f"- K = {k}, {policy} - top: " + "; ".join(diffs))
    lines += provenance_lines(meta["command"], load=meta["load"])
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fiq_gym.benchmarks.planning_headroom", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--configurations", nargs="+", default=["default", "terse"])
    parser.add_argument("--slate-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=list(DEFAULT_POLICIES),
        help="the slate policies to play (top always; default: top partition)",
    )
    parser.add_argument(
        "--feedback",
        choices=FEEDBACK,
        default="caption",
        help="what the shopper answers a slate with: its pick and a caption (default), or the pick "
        "only (written to planning_headroom-pick.md / .json)",
    )
    parser.add_argument("--out", type=Path, default=default_results_dir())
    args = parser.parse_args(argv)
    refuse_unclean_publication(parser, args.out)
    meta = {
        "command": command_line("fiq_gym.benchmarks.planning_headroom", argv),
        "revision": git_revision(),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    policies = ["top", *(p for p in args.policies if p != "top")]
    measured: dict[str, Any] = {}
    for configuration in args.configurations:
        runs: dict[str, Any] = {}
        for k in args.slate_sizes:
            for policy in policies if k > 1 else ("top",):
                start = time.perf_counter()
                found = simulate(configuration, policy, k, args.episodes, feedback=args.feedback)
                runs[f"{k}:{policy}"] = {"found": found.tolist(), "seconds": time.perf_counter() - start}
                by = [round(float(success_by(found, t).mean()), 3) for t in range(1, 6)]
                print(f"{configuration:<8} K={k} {policy:<10} success by turn {by}", flush=True)
        measured[configuration] = {
            "episodes": args.episodes,
            "slate_sizes": args.slate_sizes,
            "policies": policies,
            "runs": runs,
        }
    text = to_markdown(measured, meta, args.feedback)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "planning_headroom" if args.feedback == "caption" else f"planning_headroom-{args.feedback}"
    atomic_write_text(args.out / f"{name}.md", text)
    record = {**meta, "feedback": args.feedback, "configurations": measured}
    atomic_write_text(args.out / f"{name}.json", json.dumps(record) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
