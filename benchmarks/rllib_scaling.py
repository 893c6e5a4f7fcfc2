"""RLlib scaling: env steps sampled per second and PPO iteration time for 0, 1 and 2 env
runners, RLlib's ``sync`` vectorization against the native vector env, per shopper; with the
start-up time of the algorithm and the memory of each runner. Needs the ``rllib`` extra.

    python -m fiq_gym.benchmarks.rllib_scaling                       # writes results/rllib_scaling.md
    python -m fiq_gym.benchmarks.rllib_scaling --runners 0 1 --users template --steps 256 --out /tmp/rs

What each column means:

* **first stage**: what proposes the shortlist (``--shortlist``): ``retriever`` (the shipped
  supervised retriever, the configuration `fiq-gym train rllib-ppo` uses) runs one dialog at
  a time, so it costs the same in both vectorization modes; ``random`` costs nothing, which
  leaves RLlib's own per-step work and the rest of the env.
* **native env alone**: the same vector env of ``--envs-per-runner`` dialogs stepped in a bare
  loop with random candidates, no RLlib: the ceiling for one sampling process.
* **sampled steps/s**: every runner samples ``--steps`` env steps with the policy (exploring),
  all at once; total steps over the wall time of that call (after one warm-up call). With 0
  runners the sampling runs in this process.
* **iteration s**: mean wall time of PPO iterations 2..n (sampling ``--train-batch-size``
  steps and updating the RLModule in this process).
* **start-up s**: building the algorithm (runner processes, envs, modules) in a Ray instance
  that is already running.
* **runner memory**: proportional set size (PSS: shared pages split between the processes that
  map them) and resident size of each runner process, after sampling; with 0 runners, of
  this process, which also holds the learner.

One Ray instance of ``max(--runners)`` CPUs serves every row; all figures of one table come
from one run on one machine, so ratios compare even when absolute numbers are noisy. Each row
starts with fresh first stages (:func:`fiq_gym.envs.building.forget_first_stages`): they keep
the state of recent dialog prefixes, and the rows replay the same seeded dialogs, so without
this a row sampled in this process would run on the previous rows' warm cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from fiq_gym.agents.rllib_ppo import Args, build_config, env_config_of, ray_session
from fiq_gym.benchmarks.publishing import (
    command_line,
    default_results_dir,
    provenance_lines,
    refuse_unclean_publication,
)
from fiq_gym.envs.building import forget_first_stages
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["Row", "measure", "run", "to_markdown"]

RESULTS = default_results_dir()
MODES = ("vector_entry_point", "sync")


@dataclass(frozen=True)
class Row:
    user: str
    mode: str
    first_stage: str
    runners: int
    envs_per_runner: int
    native_alone: float  # steps/s of the bare vector env, no RLlib
    sampled: float  # env steps/s sampled by all runners together
    iteration_seconds: float
    startup_seconds: float
    pss_mb: float  # mean over runners
    rss_mb: float


def _memory_mb() -> tuple[float, float]:
    """(PSS, RSS) of the calling process in MB, from /proc/self/smaps_rollup (Linux)."""
    values = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        return float("nan"), float("nan")
    return values.get("Pss", float("nan")), values.get("Rss", float("nan"))


def _native_alone(args: Args, steps: int) -> float:
    """Env steps/s of the vector env of ``args.envs_per_runner`` with random candidates."""
    n = args.envs_per_runner
    envs = gym.make_vec(
        args.env_id, num_envs=n, vectorization_mode="vector_entry_point", **env_config_of(args)
    )
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    try:
        for _ in range(5):  # warm up
            envs.step(rng.integers(args.shortlist_size, size=n))
        calls = max(1, steps // n)
        start = time.perf_counter()
        for _ in range(calls):
            envs.step(rng.integers(args.shortlist_size, size=n))
        return calls * n / (time.perf_counter() - start)
    finally:
        envs.close()


def _sample(algo: Any, steps: int, local: bool) -> float:
    """Env steps/s of every runner sampling ``steps`` at once (``algo``: an RLlib Algorithm)."""

    def sample(runner: Any) -> int:
        return sum(len(e) for e in runner.sample(num_timesteps=steps, explore=True))

    group = algo.env_runner_group
    group.foreach_env_runner(sample, local_env_runner=local)  # warm up
    start = time.perf_counter()
    counts = group.foreach_env_runner(sample, local_env_runner=local)
    return sum(counts) / (time.perf_counter() - start)


def measure(args: Args, steps: int, iterations: int) -> Row:
    """One row: ``args`` fixes the shopper, mode, first stage, runners and sizes."""
    forget_first_stages()
    native = _native_alone(args, steps)
    forget_first_stages()
    start = time.perf_counter()
    algo = build_config(args).build_algo()
    startup = time.perf_counter() - start
    try:
        local = args.num_env_runners == 0
        sampled = _sample(algo, steps, local)
        memory = algo.env_runner_group.foreach_env_runner(lambda _: _memory_mb(), local_env_runner=local)
        times = [algo.train()["time_this_iter_s"] for _ in range(iterations)]
    finally:
        algo.stop()
    return Row(
        user=args.user,
        mode=args.vectorize,
        first_stage=args.shortlist,
        runners=args.num_env_runners,
        envs_per_runner=args.envs_per_runner,
        native_alone=native,
        sampled=sampled,
        iteration_seconds=float(np.mean(times[1:] if len(times) > 1 else times)),
        startup_seconds=startup,
        pss_mb=float(np.mean([m[0] for m in memory])),
        rss_mb=float(np.mean([m[1] for m in memory])),
    )


def _lookup(rows: Sequence[Row], first_stage: str, user: str, mode: str, runners: int) -> Row | None:
    key = (first_stage, user, mode, runners)
    return next((r for r in rows if (r.first_stage, r.user, r.mode, r.runners) == key), None)


def to_markdown(rows: Sequence[Row], command: str, catalog: str, load: str = "") -> str:
    lines = [
        "# RLlib scaling",
        "",
        f"RLlib PPO on the shortlist (`fiq-gym train rllib-ppo`'s configuration), {catalog}, "
        f"{rows[0].envs_per_runner} dialogs per runner. Steps are env steps (one dialog turn). "
        "Columns: see `python -m fiq_gym.benchmarks.rllib_scaling --help` and the module docstring.",
        "",
        "| first stage | shopper | vectorization | runners | native env alone (steps/s) | sampled (steps/s) | iteration s | start-up s | runner PSS MB | runner RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.first_stage} | {r.user} | {r.mode} | {r.runners} | {r.native_alone:,.0f} | {r.sampled:,.0f} | "
            f"{r.iteration_seconds:.2f} | {r.startup_seconds:.1f} | {r.pss_mb:,.0f} | {r.rss_mb:,.0f} |"
        )
    ratios = []
    for first_stage in dict.fromkeys(r.first_stage for r in rows):
        for user in dict.fromkeys(r.user for r in rows):
            for runners in sorted({r.runners for r in rows}):
                native = _lookup(rows, first_stage, user, MODES[0], runners)
                sync = _lookup(rows, first_stage, user, MODES[1], runners)
                if native and sync:
                    ratios.append(
                        f"- {first_stage} first stage, {user}, {runners} runner{'s' if runners != 1 else ''}: "
                        f"native / sync sampling **{native.sampled / sync.sampled:.1f}x** (goal >= 2x)"
                    )
    if ratios:
        lines += ["", "## Native vector env against RLlib's sync vectorization", "", *ratios]
    lines += provenance_lines(command, load=load, extra_libraries=f"ray {__import__('ray').__version__}")
    return "\n".join(lines)


def run(
    *,
    runners: Sequence[int],
    modes: Sequence[str],
    users: Sequence[str],
    envs_per_runner: int,
    steps: int,
    iterations: int,
    train_batch_size: int,
    catalog: str | None,
    out: Path,
    command: str,
    shortlist: str | Sequence[str] = "retriever",
) -> str:
    """Measure every (shopper, mode, runners) row and write ``out/rllib_scaling.md``."""
    rows = []
    # Other work on the machine moves every figure: the file says how busy it was.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    torch.set_num_threads(1)  # as `fiq-gym train rllib-ppo` does (--threads 1)
    with ray_session(num_cpus=max(1, *runners)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first_stages = [shortlist] if isinstance(shortlist, str) else list(shortlist)
        for first_stage in first_stages:
            for user in users:
                for mode in modes:
                    for n in runners:
                        args = Args(
                            catalog=catalog,
                            shortlist=first_stage,
                            user=user,
                            num_env_runners=n,
                            envs_per_runner=envs_per_runner,
                            vectorize=mode,
                            train_batch_size=train_batch_size,
                            minibatch_size=min(256, train_batch_size),
                            num_epochs=1,
                        )
                        rows.append(measure(args, steps, iterations))
                        print(rows[-1], file=sys.stderr, flush=True)
    where = f"catalog {catalog}" if catalog else "the default catalog (10,000 items)"
    text = to_markdown(rows, command, where, load)
    atomic_write_text(out / "rllib_scaling.md", text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2], help="env runner counts")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--users", nargs="+", default=["template", "transformer"], help="shoppers")
    parser.add_argument("--envs-per-runner", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1024, help="env steps each runner samples per timing")
    parser.add_argument("--iterations", type=int, default=3, help="PPO iterations (the first is not timed)")
    parser.add_argument("--train-batch-size", type=int, default=1024)
    parser.add_argument("--catalog", help="catalog directory (default: the default catalog)")
    parser.add_argument(
        "--shortlist",
        nargs="+",
        default=["retriever", "random"],
        help="first stages to measure (retriever, retriever:DIR, random)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if min(args.runners) < 0 or args.envs_per_runner < 1 or args.steps < 1 or args.iterations < 1:
        parser.error("--runners must be >= 0; --envs-per-runner, --steps and --iterations >= 1")
    refuse_unclean_publication(parser, args.out)
    command = command_line("fiq_gym.benchmarks.rllib_scaling", argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(
        run(
            runners=args.runners,
            modes=args.modes,
            users=args.users,
            envs_per_runner=args.envs_per_runner,
            steps=args.steps,
            iterations=args.iterations,
            train_batch_size=args.train_batch_size,
            catalog=args.catalog,
            shortlist=args.shortlist,
            out=args.out,
            command=command,
        )
    )


if __name__ == "__main__":
    main()
