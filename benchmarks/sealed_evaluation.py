"""What the sealed evaluation harness costs, and what it stops.

    python -m fiq_gym.benchmarks.sealed_evaluation             # default catalog; writes results/
    python -m fiq_gym.benchmarks.sealed_evaluation --catalog DIR --episodes 200 --out /tmp/sealed

Overhead: episodes per second of the evaluation harness sealed (the environment in a child
process) and unsealed (in this process), same agent, same evaluation set, 64 parallel
dialogs, on one machine in one run, after an untimed warm-up of each. Both start from an env
the caller has already built, as ``fiq-gym bench`` does. Sealed, two cases: a warm child (a
:class:`~fiq_gym.envs.evaluation.SealedEvaluator` that has evaluated on this env before, as
``evaluate`` and ``fiq-gym bench`` use it from their second evaluation on) and a new child,
whose start (Python, torch, the env) is reported apart from its playing time.

Integrity: each cheating agent's success rate at turn 1 (the random agent: about 1/N) under
both harnesses, on fresh env objects; then the cost of the isolated mode (the agent in a
process of its own) end to end from a checkpoint, and the deliberately cheating agents of
:mod:`fiq_gym.benchmarks.adversaries` in each mode.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import gymnasium as gym
import numpy as np

import fiq_gym  # noqa: F401 - registers the ids
from fiq_gym.benchmarks.publishing import default_results_dir, git_revision
from fiq_gym.envs.evaluation import (
    EvaluationSet,
    SealedEvaluator,
    evaluate,
    evaluate_in_process,
    play_dialogs,
)
from fiq_gym.envs.inner import inner_env
from fiq_gym.utils.atomic import atomic_write_text

__all__ = ["CHEATS", "main", "measure_overhead", "rank_cheat_on_a_bare_env", "score_cheats"]

ENV = "fiq_gym/FashionIQ-v3"


# --- cheating agents: each one would find the target if it could reach the environment -----------


class ReadsRankAndGallery:
    """Sorts the gallery by similarity to the shown item and shows the item whose rank equals
    ``info["rank"]``: in ``index`` mode that leaves one candidate, the target."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.features = np.asarray(inner_env(venv).gallery.features)

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        pass

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        shown, rank = np.atleast_1d(info["shown"]), np.atleast_1d(info["rank"])
        actions = np.empty(len(shown), dtype=np.int64)
        for k, (s, r) in enumerate(zip(shown, rank, strict=True)):
            sims = self.features @ self.features[s]
            # An item's rank: the other items scoring at least as high (ties count against it).
            order = np.sort(sims)
            ranks = len(sims) - np.searchsorted(order, sims, side="left") - 1
            candidates = np.flatnonzero(ranks == r)
            candidates = candidates[candidates != s]
            actions[k] = candidates[0] if len(candidates) else s
        return actions


class OpensUnwrapped:
    """Reads the target from the env's private dialog state."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        pass

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return inner_env(self.venv)._dialog.target.copy()


class PicklesEnv(OpensUnwrapped):
    """Reads the target from a pickled and unpickled copy of the env."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return pickle.loads(pickle.dumps(inner_env(self.venv)))._dialog.target.copy()


class DeepCopiesEnv(OpensUnwrapped):
    """Reads the target from a deep copy of the env."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return copy.deepcopy(inner_env(self.venv))._dialog.target.copy()


class CopiesGenerators(OpensUnwrapped):
    """Shows the target the next reset would draw, from a copy of each sub-env's generator."""

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        n = inner_env(self.venv).num_items
        gens = inner_env(self.venv).np_random_generators
        return np.array([copy.deepcopy(g).integers(n) for g in gens], dtype=np.int64)


#: name -> agent factory taking the vector env the caller built.
CHEATS: dict[str, Callable[[gym.vector.VectorEnv], Any]] = {
    "reads info['rank'] + gallery": ReadsRankAndGallery,
    "opens env.unwrapped": OpensUnwrapped,
    "pickles the env": PicklesEnv,
    "deep-copies the env": DeepCopiesEnv,
    "copies the generators": CopiesGenerators,
}


def _random_agent(venv: gym.vector.VectorEnv) -> Any:
    from fiq_gym.agents import RandomAgent

    return RandomAgent.for_env(venv, seed=0)


def _retriever_agent(venv: gym.vector.VectorEnv) -> Any:
    """The supervised retriever's network (fresh weights: the same work per turn as trained)."""
    import torch

    from fiq_gym.agents.retriever import RetrieverAgent, RetrieverConfig, RetrieverNet

    torch.manual_seed(0)
    return RetrieverAgent(RetrieverNet(RetrieverConfig.for_env(venv)), inner_env(venv).gallery)


AGENTS = {
    "retriever (scores)": ("scores", _retriever_agent),
    "random (index)": ("index", _random_agent),
}


@dataclass(frozen=True)
class Overhead:
    """Seconds of each repeat: unsealed; sealed on a warm child; sealed on a new child, until
    it answered (start) and playing."""

    agent: str
    episodes: int
    unsealed: tuple[float, ...]
    warm: tuple[float, ...]
    cold_start: tuple[float, ...]
    cold_play: tuple[float, ...]

    @property
    def cold(self) -> tuple[float, ...]:
        return tuple(a + b for a, b in zip(self.cold_start, self.cold_play, strict=True))

    def ratios(self) -> list[float]:
        """Sealed (warm child) / unsealed wall time of each repeat."""
        return [s / u for s, u in zip(self.warm, self.unsealed, strict=True)]

    def cold_ratios(self) -> list[float]:
        """Sealed (new child, start included) / unsealed wall time of each repeat."""
        return [s / u for s, u in zip(self.cold, self.unsealed, strict=True)]


def _make(catalog: str | None, num_envs: int, action_mode: str) -> gym.vector.VectorEnv:
    return gym.make_vec(
        ENV,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        catalog=catalog,
        action_mode=action_mode,
    )


def measure_overhead(
    catalog: str | None,
    episodes: int,
    num_envs: int = 64,
    seed: int = 0,
    repeats: int = 3,
    torch_threads: int = 1,
) -> list[Overhead]:
    """Unsealed and sealed runs per agent on the same evaluation set, ``repeats`` times,
    rotating which goes first (the machine may be shared: drift hits all alike); checks that
    every run gives the same ranks."""
    import torch

    torch.set_num_threads(torch_threads)
    return [
        _time_agent(name, mode, factory, catalog, episodes, num_envs, seed, repeats)
        for name, (mode, factory) in AGENTS.items()
    ]


def _time_agent(
    name: str,
    mode: str,
    factory: Callable[[gym.vector.VectorEnv], Any],
    catalog: str | None,
    episodes: int,
    num_envs: int,
    seed: int,
    repeats: int,
) -> Overhead:
    venv = _make(catalog, num_envs, mode)
    eval_set = EvaluationSet.generate(inner_env(venv).num_items, episodes, seed=2021)
    kwargs: dict[str, Any] = {"catalog": catalog, "action_mode": mode}
    times: dict[str, list[float]] = {"unsealed": [], "warm": [], "start": [], "play": []}
    session = SealedEvaluator(ENV, num_envs=num_envs, **kwargs)
    try:
        # Warm up (first torch calls, the env's caches, the warm child's env), so no timed
        # run pays for it.
        expected = evaluate_in_process(factory(venv), venv, eval_set, seed).ranks
        session.evaluate(factory(venv), eval_set, seed)

        def unsealed() -> np.ndarray:
            agent = factory(venv)
            start = time.perf_counter()
            ranks = evaluate_in_process(agent, venv, eval_set, seed).ranks
            times["unsealed"].append(time.perf_counter() - start)
            return ranks

        def warm() -> np.ndarray:
            agent = factory(venv)
            start = time.perf_counter()
            ranks = session.evaluate(agent, eval_set, seed).ranks
            times["warm"].append(time.perf_counter() - start)
            return ranks

        def cold() -> np.ndarray:
            agent = factory(venv)
            start = time.perf_counter()
            with (
                SealedEvaluator() as fresh,
                fresh.open(eval_set, seed, env=ENV, num_envs=num_envs, **kwargs) as dialogs,
            ):
                ready = time.perf_counter()
                play_dialogs(agent, dialogs)
                ranks, _ = dialogs.result()
            times["start"].append(ready - start)
            times["play"].append(time.perf_counter() - ready)
            return ranks

        runs = [unsealed, warm, cold]
        for r in range(repeats):
            for run in runs[r % 3 :] + runs[: r % 3]:
                if not np.array_equal(run(), expected):
                    raise RuntimeError(f"{name}: the sealed and unsealed harnesses disagree; this is a bug")
    finally:
        session.close()
        venv.close()
    return Overhead(
        name,
        episodes,
        tuple(times["unsealed"]),
        tuple(times["warm"]),
        tuple(times["start"]),
        tuple(times["play"]),
    )


def _retriever_checkpoint(catalog: str | None, directory: Path) -> Path:
    """The supervised retriever's network (fresh weights) saved as ``fiq-gym train`` saves it."""
    import torch

    from fiq_gym.agents.retriever import RetrieverConfig, RetrieverNet, save_checkpoint

    venv = _make(catalog, 1, "scores")
    try:
        torch.manual_seed(0)
        net = RetrieverNet(RetrieverConfig.for_env(venv))
    finally:
        venv.close()
    args = {"env_id": ENV, "catalog": catalog, "user": "template", "max_turns": 5}
    return save_checkpoint(directory / "checkpoint", net, args=args, agent="supervised")


#: the isolation modes of the end-to-end runs, as ``fiq-gym eval --isolation`` names them
ISOLATIONS = ("none", "sealed", "process")


def measure_isolation(
    catalog: str | None, episodes: int, num_envs: int = 64, seed: int = 0, repeats: int = 3
) -> dict[str, list[float]]:
    """Seconds of ``fiq-gym eval CHECKPOINT --isolation MODE`` for a supervised-retriever
    checkpoint, each run a fresh process as a user starts it (imports, loading, the processes
    the mode starts, playing), repeats rotating which mode goes first after one untimed round;
    every run must give the same ranks."""
    import json
    import subprocess
    import tempfile

    times: dict[str, list[float]] = {mode: [] for mode in ISOLATIONS}
    with tempfile.TemporaryDirectory(prefix="fiq-gym-isolation-") as tmp:
        checkpoint = _retriever_checkpoint(catalog, Path(tmp))
        expected = None
        for r in range(repeats + 1):  # the first round warms the file cache and is not timed
            for mode in ISOLATIONS[r % 3 :] + ISOLATIONS[: r % 3]:
                out = Path(tmp) / f"{mode}-{r}.json"
                command = [
                    sys.executable,
                    "-m",
                    "fiq_gym",
                    "eval",
                    str(checkpoint),
                    "--episodes",
                    str(episodes),
                ]
                command += ["--seed", str(seed), "--isolation", mode, "--out", str(out)]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                if r:
                    times[mode].append(time.perf_counter() - start)
                per_turn = json.loads(out.read_text())["per_turn"]
                if expected is None:
                    expected = per_turn
                elif per_turn != expected:
                    raise RuntimeError(
                        f"isolation={mode!r} gave other results than the other modes; this is a bug"
                    )
    return times


def score_adversaries(catalog: str | None, episodes: int, num_envs: int = 64) -> dict[str, dict[str, str]]:
    """name -> success at turn 1 (or the error that stopped it) of each deliberately cheating
    agent: in this process (``none``), sealed, and isolated on a held-out set."""
    from fiq_gym.benchmarks.adversaries import ADVERSARIES
    from fiq_gym.envs.evaluation import AgentSpec, HeldOutSeed, close_warm_evaluator
    from fiq_gym.errors import EvaluationError

    secret = HeldOutSeed(int.from_bytes(os.urandom(6), "little"))
    scores: dict[str, dict[str, str]] = {}
    for name, adversary in {"random agent (baseline)": None, **ADVERSARIES}.items():
        row: dict[str, str] = {}
        for mode in ("none", "sealed", "process"):
            close_warm_evaluator()
            venv = _make(catalog, num_envs, "index")
            agent: Any = None
            try:
                if mode == "process":
                    factory = (
                        "fiq_gym.agents.random_agent:RandomAgent.for_env"
                        if adversary is None
                        else f"fiq_gym.benchmarks.adversaries:{adversary.__name__}"
                    )
                    kwargs = {"seed": 0} if adversary is None else {"episodes": episodes}
                    result = evaluate(
                        AgentSpec(factory, kwargs),
                        ENV,
                        episodes,
                        secret,
                        isolation="process",
                        catalog=catalog,
                    )
                else:
                    agent = _random_agent(venv) if adversary is None else adversary(venv, episodes=episodes)
                    result = evaluate(agent, venv, episodes, seed=0, isolation=mode)
                row[mode] = f"{result.per_turn()[1]['success_rate']:.3f}"
            except EvaluationError as e:
                row[mode] = f"refused: {str(e).split(':')[0]}"
            finally:
                getattr(agent, "restore", lambda: None)()
                venv.close()
        scores[name] = row
    close_warm_evaluator()
    return scores


def score_cheats(
    catalog: str | None, episodes: int, num_envs: int = 64, seed: int = 0
) -> dict[str, dict[str, str]]:
    """name -> {"unsealed": ..., "sealed": ...}: success at turn 1, or the error that stopped it."""
    scores: dict[str, dict[str, str]] = {}
    for name, factory in {"random agent (baseline)": _random_agent, **CHEATS}.items():
        row = {}
        for sealed in (True, False):
            venv = _make(catalog, num_envs, "index")  # fresh: no dialogs of an earlier run in it
            try:
                result = evaluate(factory(venv), venv, episodes, seed=seed, sealed=sealed)
                row["sealed" if sealed else "unsealed"] = f"{result.per_turn()[1]['success_rate']:.3f}"
            except KeyError as e:
                row["sealed" if sealed else "unsealed"] = f"refused: {e.args[0].split(':')[0]}"
            finally:
                venv.close()
        scores[name] = row
    return scores


def rank_cheat_on_a_bare_env(catalog: str | None, episodes: int, num_envs: int = 64) -> float:
    """Success at turn 1 of the rank + gallery agent stepping an env itself, with the full
    ``info`` that training sees, on the dialogs of an evaluation set."""
    venv = _make(catalog, num_envs, "index")
    eval_set = EvaluationSet.generate(inner_env(venv).num_items, episodes, seed=0)
    agent, hits = ReadsRankAndGallery(venv), 0
    try:
        for start in range(0, episodes, num_envs):
            idx = np.resize(np.arange(start, min(start + num_envs, episodes)), num_envs)
            obs, info = venv.reset(
                seed=start, options={"target": eval_set.targets[idx], "shown": eval_set.shown[idx]}
            )
            _, _, _, _, step_info = venv.step(agent.act(obs, info))
            hits += int(np.asarray(step_info["is_success"])[: min(num_envs, episodes - start)].sum())
    finally:
        venv.close()
    return hits / episodes


def to_markdown(
    overheads: Sequence[Overhead],
    cheats: dict[str, dict[str, str]],
    meta: dict[str, str],
    isolation: dict[str, list[float]] | None = None,
    adversaries: dict[str, dict[str, str]] | None = None,
) -> str:
    lines = [
        "# Sealed evaluation: overhead and integrity",
        "",
        f"Command: `{meta['command']}`  ",
        f"Git revision: {meta['revision']}  ",
        f"Machine: {meta['machine']}  ",
        f"Catalog: {meta['catalog']}; template shopper; {meta['num_envs']} parallel dialogs.",
        "",
        "## Overhead",
        "",
        f"Episodes per second of the harness, same agent and evaluation set, median of {meta['repeats']} repeats",
        "rotating which run goes first (slowdown: median sealed / median unsealed time). Warm child: a",
        "`SealedEvaluator` that evaluated on this env before (what `evaluate` and `fiq-gym bench` use from their",
        "second evaluation on). New child: one started for the run, its start (Python, torch, the env) counted;",
        f"every run gave identical ranks. Load average (1, 5, 15 min) when the overhead runs began: {meta['load']};",
        f"when they ended: {meta['load_end']}.",
        "",
        "| agent | episodes | unsealed ep/s | sealed ep/s, warm child | slowdown, warm child | per repeat | new child: start (s) | sealed ep/s, new child | slowdown, new child | new child, playing only |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for o in overheads:
        unsealed, warm, cold = median(o.unsealed), median(o.warm), median(o.cold)
        lines.append(
            f"| {o.agent} | {o.episodes} | {o.episodes / unsealed:,.0f} | {o.episodes / warm:,.0f} | "
            f"{warm / unsealed:.2f}x | " + ", ".join(f"{r:.2f}x" for r in o.ratios()) + " | "
            f"{median(o.cold_start):.2f} | {o.episodes / cold:,.0f} | {cold / unsealed:.2f}x | "
            f"{median(o.cold_play) / unsealed:.2f}x |"
        )
    lines += [
        "",
        "## Cheating agents",
        "",
        f"Success rate at turn 1 on {meta['cheat_episodes']} dialogs (index actions). 'refused' is the error",
        "the harness raised.",
        "",
        "| agent | unsealed | sealed |",
        "|---|---:|---:|",
    ]
    for name, row in cheats.items():
        lines.append(f"| {name} | {row['unsealed']} | {row['sealed']} |")
    lines += [
        "",
        "The rank + gallery agent is refused by both harnesses, which withhold `info['rank']`; on a bare",
        f"env loop, with the full `info` of training, it shows the target at turn 1 in {meta['bare_rank_cheat']}",
        "of the dialogs. The generator copies predict the targets of unseeded resets, not those an",
        "evaluation set fixes, so they win under neither harness.",
    ]
    if isolation:
        none = median(isolation["none"])
        lines += [
            "",
            "## Isolated evaluation: cost",
            "",
            f"Seconds of `fiq-gym eval CHECKPOINT --episodes {meta['episodes']} --isolation MODE` on a supervised-retriever",
            "checkpoint, each a fresh process as a user starts it (imports, loading, the processes the mode",
            f"starts, playing); median of {meta['repeats']} repeats rotating the order, after one untimed round;",
            "identical results in every run. `none`: all in one process; `sealed`: the env in a child, the agent",
            "in the caller; `process`: the agent in a process of its own, started first so that it imports its",
            "libraries and loads the checkpoint while the evaluator does its own start, the env in the evaluator.",
            "",
            "| isolation | seconds (median) | per repeat | vs none |",
            "|---|---:|---|---:|",
        ]
        for mode, times in isolation.items():
            lines.append(
                f"| {mode} | {median(times):.2f} | "
                + ", ".join(f"{t:.2f}" for t in times)
                + f" | {median(times) / none:.2f}x |"
            )
    if adversaries:
        lines += [
            "",
            "## Deliberately cheating agents",
            "",
            f"Success rate at turn 1 on {meta['cheat_episodes']} dialogs (index actions) of agents that set out to",
            "cheat with ordinary Python (`fiq_gym.benchmarks.adversaries`); 'refused' is the harness's error.",
            "`none` and `sealed` run the agent in the evaluating process on the public seed 0; `process`",
            "runs it in a process of its own on a held-out set (a secret seed drawn for this run).",
            "",
            "| agent | none | sealed | process, held-out set |",
            "|---|---:|---:|---:|",
        ]
        for name, row in adversaries.items():
            lines.append(f"| {name} | {row['none']} | {row['sealed']} | {row['process']} |")
        lines += [
            "",
            "The sealed harness stops accidents (the env object, its ranks and generators are out of",
            "reach) but not an agent that reads the caller's frames or patches the harness in the",
            "process it shares with the evaluation set: evaluate agents you do not trust with",
            "`--isolation process` (the default of `fiq-gym eval`) on a held-out set.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from fiq_gym.benchmarks.publishing import machine_line

    parser = argparse.ArgumentParser(
        prog="python -m fiq_gym.benchmarks.sealed_evaluation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--catalog", help="catalog directory (default: the built-in synthetic catalog)")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes of the overhead runs")
    parser.add_argument(
        "--cheat-episodes", type=int, default=500, help="episodes of each cheating agent's run"
    )
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per harness and agent")
    parser.add_argument(
        "--out",
        type=Path,
        default=default_results_dir(),
        help="directory of sealed_evaluation.md (default: benchmarks/results of the checkout, or "
        "./fiq-gym-results when installed)",
    )
    args = parser.parse_args(argv)
    command = "python -m fiq_gym.benchmarks.sealed_evaluation " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    overheads = measure_overhead(args.catalog, args.episodes, args.num_envs, repeats=args.repeats)
    load_end = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cheats = score_cheats(args.catalog, args.cheat_episodes, args.num_envs)
    isolation = measure_isolation(args.catalog, args.episodes, args.num_envs, repeats=args.repeats)
    adversaries = score_adversaries(args.catalog, args.cheat_episodes, args.num_envs)
    meta = {
        "command": command.strip(),
        "revision": git_revision(),
        "machine": machine_line(),
        "catalog": args.catalog or "the default synthetic catalog (10,000 items)",
        "cheat_episodes": str(args.cheat_episodes),
        "repeats": str(args.repeats),
        "num_envs": str(args.num_envs),
        "episodes": str(args.episodes),
        "load": load,
        "load_end": load_end,
        "bare_rank_cheat": f"{rank_cheat_on_a_bare_env(args.catalog, args.cheat_episodes, args.num_envs):.3f}",
    }
    text = to_markdown(overheads, cheats, meta, isolation, adversaries)
    atomic_write_text(args.out / "sealed_evaluation.md", text)
    print(text)
    print(f"wrote {args.out / 'sealed_evaluation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
